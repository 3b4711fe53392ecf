package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// broker is a `samsa broker` child process with a temporary data
// directory.
type broker struct {
	cmd  *exec.Cmd
	dir  string // the data directory, and the binary if we built it
	addr string

	done    chan struct{} // closed when the process has exited
	waitErr error         // how it exited; set before done is closed

	stopOnce sync.Once
}

// startBroker starts `samsa broker` on a free port of 127.0.0.1. An empty
// bin builds cmd/samsa first, with the go command, from the working
// directory's module.
func startBroker(ctx context.Context, bin string) (*broker, error) {
	dir, err := os.MkdirTemp("", "samsa-bench-")
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if bin == "" {
		bin = filepath.Join(dir, "samsa")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/samsa-go/samsa/cmd/samsa")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("broker: build cmd/samsa (run from the samsa module, or give --broker-bin): %w", err)
		}
	}

	// The child writes straight into a pipe of ours, so reading its
	// address does not race with waiting for it.
	pr, pw, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("broker: %w", err)
	}
	cmd := exec.Command(bin, "broker", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"), "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = pw, os.Stderr
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("broker: start %s: %w", bin, err)
	}
	b := &broker{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() {
		b.waitErr = cmd.Wait()
		close(b.done)
	}()
	addrs := make(chan string, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			addrs <- strings.TrimSpace(sc.Text())
		}
		close(addrs)
		for sc.Scan() { // nothing more is expected; keep the pipe drained
		}
	}()

	select {
	case addr, ok := <-addrs:
		if !ok || addr == "" {
			b.stop()
			return nil, fmt.Errorf("broker: %s exited without printing its address (%v)", bin, b.waitErr)
		}
		b.addr = addr
		return b, nil
	case <-time.After(30 * time.Second):
		b.stop()
		return nil, errors.New("broker: no address printed within 30s")
	case <-ctx.Done():
		b.stop()
		return nil, ctx.Err()
	}
}

// stop terminates the broker, waits for it to exit and removes its data
// directory. It returns how the broker exited; it is idempotent.
func (b *broker) stop() error {
	b.stopOnce.Do(func() {
		if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			_ = b.cmd.Process.Kill()
		}
		select {
		case <-b.done:
		case <-time.After(time.Minute):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
		os.RemoveAll(b.dir)
	})
	return b.waitErr
}

// clockTicks is the unit of the CPU times in /proc: USER_HZ, 100 on every
// mainstream Linux.
const clockTicks = 100

// cpu returns the user and system CPU time the broker has used so far. It
// reads /proc, so it reports false off Linux, and for a nil broker (one
// this command did not start).
func (b *broker) cpu() (time.Duration, bool) {
	if b == nil {
		return 0, false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.cmd.Process.Pid))
	if err != nil {
		return 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// after it come state (field 3), ..., utime (14) and stime (15).
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, true
}
