package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/samsa-go/samsa/internal/testpki"
)

// startBroker runs `samsa broker` with args in the test process until the
// test ends, and returns its address and a reader of its log.
func startBroker(t *testing.T, args ...string) (addr string, log *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	log = &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"broker", "--listen", "127.0.0.1:0", "--log-level", "debug"}, args...), pw, log)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("samsa broker %q printed no address: %v; log:\n%s", args, err, log.String())
	}
	go io.Copy(io.Discard, pr)
	return strings.TrimSpace(line), log
}

// `samsa broker` with TLS (mutual, with --tls-client-ca) and SASL users
// from a file and from --sasl-user with the password in the environment:
// the admin helpers connect with the right settings and credentials, and
// fail with a clear error with a wrong password or without a client
// certificate. No password shows in the broker's log.
func TestBrokerTLSAndSASL(t *testing.T) {
	pki := testpki.New(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("# mechanism user password\nSCRAM-SHA-512 ann ann-pw-1\nplain bob bob-pw-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SAMSA_SASL_PASSWORD", "cy-pw-3")
	addr, log := startBroker(t, "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CAFile,
		"--sasl-users-file", users, "--sasl-mechanism", "scram-sha-256", "--sasl-user", "cy")

	mtls := []string{"--tls-ca", pki.CAFile, "--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey}
	for _, u := range []struct{ mech, user, pass string }{
		{"SCRAM-SHA-512", "ann", "ann-pw-1"}, {"PLAIN", "bob", "bob-pw-2"}, {"SCRAM-SHA-256", "cy", "cy-pw-3"},
	} {
		t.Setenv("SAMSA_SASL_PASSWORD", u.pass)
		args := append([]string{"topics", "create", "t-" + u.user, "--sasl-mechanism", u.mech, "--sasl-user", u.user}, mtls...)
		if code, out, errOut := samsa(t, addr, "", args...); code != 0 || !strings.Contains(out, "created") {
			t.Errorf("%s as %s: exit %d, %q, %s", strings.Join(args, " "), u.user, code, out, errOut)
		}
	}

	t.Setenv("SAMSA_SASL_PASSWORD", "wrong-pw")
	code, _, errOut := samsa(t, addr, "", append([]string{"topics", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", "ann"}, mtls...)...)
	if code != 1 || !strings.Contains(errOut, `authentication failed for user "ann" with mechanism SCRAM-SHA-512`) {
		t.Errorf("wrong password: exit %d, %q", code, errOut)
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("ann-pw-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = samsa(t, addr, "", "topics", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", "ann", "--sasl-password-file", pwFile, "--tls-ca", pki.CAFile)
	if code != 1 || !strings.Contains(errOut, "requires a client certificate") {
		t.Errorf("no client certificate: exit %d, %q", code, errOut)
	}
	code, _, errOut = samsa(t, addr, "", "topics")
	if code != 1 || !strings.Contains(errOut, "speaks TLS") {
		t.Errorf("plaintext: exit %d, %q", code, errOut)
	}

	for _, pw := range []string{"ann-pw-1", "bob-pw-2", "cy-pw-3", "wrong-pw"} {
		if strings.Contains(log.String(), pw) {
			t.Errorf("the broker's log shows the password %q", pw)
		}
	}
	if !strings.Contains(log.String(), "sasl_users=") || !strings.Contains(log.String(), "cy (SCRAM-SHA-256)") {
		t.Errorf("the broker's log does not name its SASL users:\n%s", log.String())
	}
}

// A SASL user without a password, a malformed users file or half of the
// TLS flags stop the broker at start with exit code 2, naming the flag
// (and never showing a password).
func TestBrokerSecurityFlagErrors(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("PLAIN ann\nPLAIN bob pw-in-file extra\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SAMSA_SASL_PASSWORD", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sasl-mechanism", "PLAIN", "--sasl-user", "ann"}, "no password: give --sasl-password-file or the environment variable SAMSA_SASL_PASSWORD"},
		{[]string{"--sasl-user", "ann"}, "--sasl-user: needs --sasl-mechanism"},
		{[]string{"--sasl-users-file", users}, users + ":1: want MECHANISM USER PASSWORD"},
		{[]string{"--tls-cert", "cert.pem"}, "--tls-cert and --tls-key: give both"},
		{[]string{"--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}, "TLS certificate /nonexistent/c.pem"},
	} {
		var out, errOut strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code := run(ctx, append([]string{"broker", "--listen", "127.0.0.1:0"}, tc.args...), &out, &errOut)
		cancel()
		if code != 2 || !strings.Contains(errOut.String(), tc.want) || strings.Contains(errOut.String(), "pw-in-file") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// syncBuffer is a strings.Builder safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
