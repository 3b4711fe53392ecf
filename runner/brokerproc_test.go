package runner_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// brokerProc is `samsa broker` (cmd/samsa) in a child process with a data
// directory: a broker a test can SIGKILL and start again on the same
// address, as an operator's broker host would crash and come back.
type brokerProc struct {
	t       *testing.T
	bin     string
	dataDir string
	addr    string // empty until the first start picks a port
	args    []string
	p       *proc
	starts  int
}

// newBrokerProc builds cmd/samsa and starts the broker on a free port of
// 127.0.0.1. extra flags follow the usual ones.
func newBrokerProc(t *testing.T, extra ...string) *brokerProc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the broker binary; skipped with -short")
	}
	b := &brokerProc{t: t, bin: procBuild(t, "../cmd/samsa"), dataDir: filepath.Join(t.TempDir(), "broker"), args: extra}
	b.start()
	return b
}

// start starts the broker: on a free port the first time, on the same
// address after that, with the same data directory.
func (b *brokerProc) start() {
	b.t.Helper()
	listen := b.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	b.starts++
	args := append([]string{"broker", "--data-dir", b.dataDir, "--listen", listen, "--log-level", "warn"}, b.args...)
	b.p = procStart(b.t, fmt.Sprintf("broker (start %d)", b.starts), b.bin, nil, args...)
	procWaitFor(b.t, 30*time.Second, "the broker to print its address", func() bool {
		b.p.running(b.t)
		return strings.Contains(b.p.stdout.String(), "\n")
	})
	addr := strings.TrimSpace(strings.SplitN(b.p.stdout.String(), "\n", 2)[0])
	if b.addr != "" && addr != b.addr {
		b.t.Fatalf("broker restarted on %s, want %s", addr, b.addr)
	}
	b.addr = addr
}

// kill SIGKILLs the broker: no shutdown, no final save of its state.
func (b *brokerProc) kill() {
	b.t.Helper()
	b.p.kill(b.t)
}
