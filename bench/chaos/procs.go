package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// child is a running child process: the broker or a job instance. Its
// stderr is appended to a log file that survives its restarts.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, set before done is closed
}

// startChild starts bin with args, appending its stderr to logPath and
// sending its stdout to stdout (the log file too if nil).
func startChild(name, bin string, args, env []string, logPath string, stdout io.Writer) (*child, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	fmt.Fprintf(log, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = log
	cmd.Stdout = stdout
	if stdout == nil {
		cmd.Stdout = log
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		log.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the process and waits for it to be gone: no shutdown, no
// final flush or commit.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// stop asks the process to stop with SIGTERM and waits up to timeout for
// it to exit, then kills it. It returns how the process exited: nil for a
// clean exit with status 0.
func (c *child) stop(timeout time.Duration) error {
	if c.exited() {
		return c.err
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		c.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", c.name, timeout)
	}
}

// buildBinaries builds cmd/samsa and the count job into dir, from the
// module of the working directory.
func buildBinaries(ctx context.Context, dir string, race bool) (samsa, job string, err error) {
	samsa, job = filepath.Join(dir, "samsa"), filepath.Join(dir, "statejob")
	for _, b := range []struct{ out, pkg string }{
		{samsa, "github.com/samsa-go/samsa/cmd/samsa"},
		{job, "github.com/samsa-go/samsa/runner/testdata/statejob"},
	} {
		args := []string{"build", "-o", b.out}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, b.pkg)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go %s %s (run from the samsa module, or give --samsa-bin and --job-bin): %w\n%s",
				strings.Join(args, " "), b.pkg, err, out)
		}
	}
	return samsa, job, nil
}

// broker is `samsa broker` with a data directory, in a child process that
// can be killed and started again on the same address.
type broker struct {
	bin, dataDir, logPath string
	extra                 []string
	addr                  string // empty until the first start picks a port
	p                     *child
	starts                int
}

// start starts the broker: on a free port of 127.0.0.1 the first time, on
// the same address after that, with the same data directory.
func (b *broker) start() error {
	listen := b.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	b.starts++
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	args := append([]string{"broker", "--data-dir", b.dataDir, "--listen", listen, "--log-level", "warn"}, b.extra...)
	p, err := startChild(fmt.Sprintf("broker (start %d)", b.starts), b.bin, args, nil, b.logPath, pw)
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	addrs := make(chan string, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			addrs <- strings.TrimSpace(sc.Text())
		}
		close(addrs)
		for sc.Scan() {
		}
	}()
	select {
	case addr, ok := <-addrs:
		if !ok || addr == "" {
			p.kill()
			return fmt.Errorf("broker: %s exited without printing its address (%v); see %s", b.bin, p.err, b.logPath)
		}
		if b.addr != "" && addr != b.addr {
			p.kill()
			return fmt.Errorf("broker: restarted on %s, want %s", addr, b.addr)
		}
		b.addr, b.p = addr, p
		return nil
	case <-time.After(time.Minute):
		p.kill()
		return fmt.Errorf("broker: no address printed within a minute; see %s", b.logPath)
	}
}

// instance is one instance of the job: a state directory and, under
// exactly-once, a transactional ID of its own, kept across its restarts.
type instance struct {
	id       int
	name     string
	stateDir string
	txnID    string
	logPath  string
	p        *child
	starts   int
}

// start runs the instance against addr.
func (in *instance) start(bin, addr string, cfg config) error {
	in.starts++
	args := []string{"run",
		"--brokers", addr,
		"--state-dir", in.stateDir,
		"--processing", cfg.processing,
		"--session-timeout", cfg.sessionTimeout.String(),
		"--log-level", "info",
	}
	if cfg.processing == exactlyOnce {
		args = append(args, "--transactional-id", in.txnID)
	}
	if cfg.commitInterval > 0 {
		args = append(args, "--commit-interval", cfg.commitInterval.String())
	}
	p, err := startChild(fmt.Sprintf("%s (start %d)", in.name, in.starts), bin, args, nil, in.logPath, nil)
	if err != nil {
		return err
	}
	in.p = p
	return nil
}

// waitStarted waits until the instance has logged that its latest start
// got past connecting to the brokers and joining the group's topics: a
// job fails fast if it cannot reach a broker when it starts (a supervisor
// would start it again), so faults wait for that.
func (in *instance) waitStarted(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := in.check(); err != nil {
			return err
		}
		b, err := os.ReadFile(in.logPath)
		if err == nil && strings.Count(string(b), "statejob: starting:") >= in.starts {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not start within %s; its log: %s", in.name, timeout, in.logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// check returns an error if the instance's process exited without being
// asked to.
func (in *instance) check() error {
	if in.p == nil || !in.p.exited() {
		return nil
	}
	return fmt.Errorf("%s exited on its own (%v); its log: %s", in.name, in.p.err, in.logPath)
}
