package runner_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/samsa-go/samsa/internal/testpki"
	"github.com/samsa-go/samsa/runner"
)

// secretBuffer collects a command's output while it runs.
type secretBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *secretBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *secretBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var metricsURL = regexp.MustCompile(`url=(http://\S+)/metrics`)

// A job binary connects to `samsa broker` started with TLS and SASL users
// from a file, with the password from SAMSA_SASL_PASSWORD, from
// --sasl-password-file or from --sasl-password. The password never shows:
// not in the job's log at trace level (franz-go's included), not in help,
// not in the error of a wrong password, not in /status. The HTTP endpoint
// of a host-less --http-addr is on loopback; an explicit host is kept.
// (Command reads the process environment: not parallel.)
func TestSecretsNeverShown(t *testing.T) {
	const pw, wrong = "s3cret-Pa55word", "wr0ng-Pa55word"
	pki := testpki.New(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(users, []byte("SCRAM-SHA-256 job "+pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := newBrokerProc(t, "--group-min-session-timeout", "100ms", "--sasl-users-file", users, "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey)
	if strings.Contains(b.p.stderr.String(), pw) {
		t.Errorf("the broker's log shows the password")
	}

	tlsc := adminTLS(t, pki)
	tlsc.Certificates = nil
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.DialTLSConfig(tlsc), kgo.SASL(scram.Auth{User: "job", Pass: pw}.AsSha256Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopics(ctx, 2, 1, nil, "in", "out"); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	if err := cl.ProduceSync(ctx, seqRecords("in", 0, 100, 7)...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	base := []string{"run", "--brokers", b.addr, "--tls-ca", pki.CAFile, "--sasl-mechanism", "SCRAM-SHA-256", "--sasl-user", "job",
		"--log-level", "trace", "--session-timeout", "1s", "--commit-interval", "100ms", "--connect-timeout", "10s"}
	noSecret := func(what, s string) {
		t.Helper()
		for _, p := range []string{pw, wrong} {
			if strings.Contains(s, p) {
				t.Errorf("%s shows a password", what)
			}
		}
	}
	runJob := func(what string, env string, args ...string) (int, string) {
		t.Helper()
		t.Setenv("SAMSA_SASL_PASSWORD", env)
		var out, errOut secretBuffer
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		start := time.Now()
		code := runner.Command(ctx, stCountJob("secrets", nil), append(append(base, "--state-dir", t.TempDir()), args...), &out, &errOut)
		t.Logf("%s: exit %d after %s", what, code, time.Since(start).Round(time.Millisecond))
		noSecret(what+": stdout", out.String())
		noSecret(what+": stderr", errOut.String())
		return code, errOut.String()
	}
	for _, src := range []struct {
		what, env string
		args      []string
	}{
		{"password from the environment", pw, nil},
		{"password from a file", "", []string{"--sasl-password-file", pwFile}},
		{"password on the command line", "", []string{"--sasl-password", pw}},
	} {
		code, errOut := runJob(src.what, src.env, append([]string{"--until-end"}, src.args...)...)
		if code != 0 {
			t.Errorf("%s: exit %d:\n%s", src.what, code, errOut)
		}
		if !strings.Contains(errOut, "[TRACE]") || !strings.Contains(errOut, "sasl") {
			t.Errorf("%s: the log has no trace of franz-go's SASL exchange", src.what)
		}
	}
	if code, errOut := runJob("wrong password", wrong, "--until-end"); code != 1 || !strings.Contains(errOut, `authentication failed for user "job" with mechanism SCRAM-SHA-256`) {
		t.Errorf("wrong password: exit %d:\n%s", code, errOut)
	}
	t.Setenv("SAMSA_SASL_PASSWORD", pw)
	var help strings.Builder
	if code := runner.Command(ctx, stCountJob("secrets", nil), []string{"help"}, &help, &help); code != 0 {
		t.Errorf("help: exit %d", code)
	}
	noSecret("help", help.String())

	// /status of a running instance, on a host-less --http-addr.
	for _, addr := range []struct{ flag, host string }{{":0", "127.0.0.1"}, {"0.0.0.0:0", ""}} {
		t.Setenv("SAMSA_SASL_PASSWORD", pw)
		rctx, stop := context.WithCancel(ctx)
		var out, errOut secretBuffer
		done := make(chan int, 1)
		go func() {
			done <- runner.Command(rctx, stCountJob("secrets", nil), append(base, "--state-dir", t.TempDir(), "--http-addr", addr.flag), &out, &errOut)
		}()
		var u *url.URL
		waitFor(t, "the job to serve HTTP", func() bool {
			if m := metricsURL.FindStringSubmatch(errOut.String()); m != nil {
				u, _ = url.Parse(m[1])
			}
			return u != nil
		})
		host, port, _ := net.SplitHostPort(u.Host)
		switch {
		case addr.host != "" && host != addr.host:
			t.Errorf("--http-addr %s serves on %s, want %s", addr.flag, u.Host, addr.host)
		case addr.host == "" && net.ParseIP(host).IsLoopback():
			t.Errorf("--http-addr %s serves on loopback %s only", addr.flag, u.Host)
		}
		var v viewJSON
		waitFor(t, "/status to show the tasks", func() bool {
			hJSON(t, "http://127.0.0.1:"+port+"/status", &v)
			return len(v.Tasks) > 0
		})
		_, body := hGet("http://127.0.0.1:" + port + "/status")
		noSecret("/status", body)
		stop()
		if code := <-done; code != 0 {
			t.Errorf("--http-addr %s: exit %d:\n%s", addr.flag, code, errOut.String())
		}
		noSecret("the log", errOut.String())
	}
}

// The default configuration serves no HTTP endpoint at all; one asked
// for without a host is on loopback (see TestSecretsNeverShown).
func TestHTTPOffByDefault(t *testing.T) {
	var c runner.Config
	c.EnsureDefaults("job")
	if c.HTTPAddr != "" {
		t.Errorf("default HTTPAddr %q, want none", c.HTTPAddr)
	}
}
