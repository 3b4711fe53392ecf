package runner_test

// Helpers for tests that run job binaries as child processes: build a
// binary, start it, wait for conditions with deadlines, stop it with a
// signal. Every child is killed when its test ends.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// procBuild builds the main package pkg (a path relative to the runner
// package directory, where tests run) into a temporary directory and
// returns the binary's path. If the test binary has the race detector on,
// so does the child.
func procBuild(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	args := []string{"build", "-o", bin}
	if procRaceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

func procRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// procBuffer is an io.Writer safe for concurrent use.
type procBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *procBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *procBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running child process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout procBuffer
	stderr procBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, set before done is closed
}

// procStart starts bin with args and, added to the test's environment,
// env. The child is killed when the test ends, and its output is logged
// if the test failed.
func procStart(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (%s) stdout:\n%s", name, strings.Join(args, " "), p.stdout.String())
			t.Logf("%s stderr:\n%s", name, procTail(p.stderr.String(), 60))
		}
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector reported a data race:\n%s", name, p.stderr.String())
		}
	})
	return p
}

func procTail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) <= lines {
		return s
	}
	return fmt.Sprintf("[%d lines omitted]\n%s", len(all)-lines, strings.Join(all[len(all)-lines:], "\n"))
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode returns the exit code of an exited process, or -1 if a signal
// killed it.
func (p *proc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

// wait waits up to timeout for the process to exit and returns its exit
// code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var exitErr *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exitErr) {
		t.Fatalf("%s: wait: %v", p.name, p.err)
	}
	return p.exitCode()
}

// kill kills the process with SIGKILL and waits for it to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s exited (code %d) before it could be killed", p.name, p.exitCode())
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	p.wait(t, 10*time.Second)
}

// terminate sends SIGTERM and returns the exit code.
func (p *proc) terminate(t *testing.T, timeout time.Duration) int {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s exited (code %d) before it could be stopped", p.name, p.exitCode())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	return p.wait(t, timeout)
}

// procWaitFor polls cond until it returns true, failing the test after
// timeout. cond may call t.Fatal itself, for instance if a child it waits
// on exited. what says what is awaited, for the failure message.
func procWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond) // the poll interval
	}
}

// running fails the test if the process exited; for use in procWaitFor
// conditions.
func (p *proc) running(t *testing.T) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s exited unexpectedly (code %d)", p.name, p.exitCode())
	}
}
