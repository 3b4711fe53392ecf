package runner_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/samsa-go/samsa/connectors/kafka"
	"github.com/samsa-go/samsa/internal/testpki"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
)

// secBroker is a kfake cluster with TLS, SASL or ACLs, and a client of
// its superuser "admin" (PLAIN, password "admin-pw") to seed it.
type secBroker struct {
	*broker
	adm *kadm.Client
}

// newSecBroker starts a cluster with opts (kfake.TLS, kfake.User, ...),
// SASL and the superuser admin, and seeds "in" with n records. client is
// the TLS the admin client needs, nil for none.
func newSecBroker(t *testing.T, client *tls.Config, n int, opts ...kfake.Opt) *secBroker {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond),
		kfake.EnableSASL(), kfake.Superuser("PLAIN", "admin", "admin-pw"),
		kfake.SeedTopics(2, "in", "out"),
	}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	copts := []kgo.Opt{kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: "admin", Pass: "admin-pw"}.AsMechanism())}
	if client != nil {
		copts = append(copts, kgo.DialTLSConfig(client))
	}
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	b := &secBroker{broker: &broker{t: t, c: c, addr: addr, cl: cl}, adm: kadm.NewClient(cl)}
	if n > 0 {
		b.produce(seqRecords("in", 0, n, 7)...)
	}
	return b
}

// adminTLS is the TLS of the test's admin client: it trusts pki's CA and
// presents its client certificate.
func adminTLS(t *testing.T, pki *testpki.PKI) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// secConfig is a runner configuration for b with the given TLS and SASL.
func (b *secBroker) secConfig(t *testing.T, tlsc kafka.TLS, sasl kafka.SASL) runner.Config {
	cfg := b.config()
	cfg.StateDir = t.TempDir()
	cfg.TLS, cfg.SASL = tlsc, sasl
	return cfg
}

// checkCounted checks that a count job processed all n records of "in":
// their offsets committed by the group, one output each (and, under
// exactly-once, the transaction markers).
func (b *secBroker) checkCounted(group string, n int, eos bool) {
	b.t.Helper()
	if got := sum(b.ends("out")); got < int64(n) || !eos && got != int64(n) {
		b.t.Errorf("out holds %d records, want %d", got, n)
	}
	c := b.committed(group, "in")
	for p, end := range b.ends("in") {
		if c[int32(p)] != end {
			b.t.Errorf("group %s committed %d on in/%d, want %d", group, c[int32(p)], p, end)
		}
	}
}

func allow(rt kmsg.ACLResourceType, name string, ops ...kmsg.ACLOperation) []kfake.ACL {
	var acls []kfake.ACL
	for _, op := range ops {
		acls = append(acls, kfake.ACL{Resource: rt, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true})
	}
	return acls
}

// A stateful job runs to the end of its input over each way to reach
// secured brokers: SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 users, TLS
// with a CA, mutual TLS, and mutual TLS with SCRAM.
func TestSecureConnections(t *testing.T) {
	pki := testpki.New(t)
	ca := kafka.TLS{CAFile: pki.CAFile}
	mutual := kafka.TLS{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
	for _, tc := range []struct {
		name   string
		server *tls.Config
		tls    kafka.TLS
		sasl   kafka.SASL
	}{
		{"plain", nil, kafka.TLS{}, kafka.SASL{Mechanism: "PLAIN", User: "job", Password: "pw-plain"}},
		{"scram-sha-256", nil, kafka.TLS{}, kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "job", Password: "pw-256"}},
		{"scram-sha-512", nil, kafka.TLS{}, kafka.SASL{Mechanism: "scram-sha-512", User: "job", Password: "pw-512"}},
		{"tls", pki.ServerConfig(t, false), ca, kafka.SASL{Mechanism: "PLAIN", User: "job", Password: "pw-plain"}},
		{"mutual tls", pki.ServerConfig(t, true), mutual, kafka.SASL{Mechanism: "PLAIN", User: "job", Password: "pw-plain"}},
		{"mutual tls and scram", pki.ServerConfig(t, true), mutual, kafka.SASL{Mechanism: "SCRAM-SHA-512", User: "job", Password: "pw-512"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []kfake.Opt{kfake.Superuser(strings.ToUpper(tc.sasl.Mechanism), tc.sasl.User, tc.sasl.Password)}
			var client *tls.Config
			if tc.server != nil {
				opts = append(opts, kfake.TLS(tc.server))
				client = adminTLS(t, pki)
			}
			b := newSecBroker(t, client, 200, opts...)
			if err := runToEnd(t, stCountJob("sec", nil), b.secConfig(t, tc.tls, tc.sasl)); err != nil {
				t.Fatalf("Run: %v", err)
			}
			b.checkCounted("sec", 200, false)
		})
	}
}

// With wrong credentials or TLS settings, a job stops at start with an
// error naming the broker or user and the cause, within the connect
// timeout, instead of retrying.
func TestSecureConnectionFailures(t *testing.T) {
	pki := testpki.New(t)
	sasl := newSecBroker(t, nil, 0, kfake.Superuser("SCRAM-SHA-256", "job", "right-pw"))
	plainTLS := newSecBroker(t, adminTLS(t, pki), 0, kfake.TLS(pki.ServerConfig(t, false)))
	mutualTLS := newSecBroker(t, adminTLS(t, pki), 0, kfake.TLS(pki.ServerConfig(t, true)))
	plaintext := newBroker(t, kfake.SeedTopics(2, "in", "out"))
	job := kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "job", Password: "right-pw"}
	admin := kafka.SASL{Mechanism: "PLAIN", User: "admin", Password: "admin-pw"}
	for _, tc := range []struct {
		name string
		addr string
		tls  kafka.TLS
		sasl kafka.SASL
		want []string
	}{
		{"wrong password", sasl.addr, kafka.TLS{}, kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "job", Password: "wrong-pw"},
			[]string{`authentication failed for user "job" with mechanism SCRAM-SHA-256`}},
		{"unknown user", sasl.addr, kafka.TLS{}, kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "nobody", Password: "right-pw"},
			[]string{`authentication failed for user "nobody" with mechanism SCRAM-SHA-256`}},
		{"wrong mechanism", sasl.addr, kafka.TLS{}, kafka.SASL{Mechanism: "SCRAM-SHA-512", User: "job", Password: "right-pw"},
			[]string{`authentication failed for user "job" with mechanism SCRAM-SHA-512`}},
		{"tls to plaintext", plaintext.addr, kafka.TLS{CAFile: pki.CAFile}, kafka.SASL{},
			[]string{"TLS handshake with broker " + plaintext.addr + " failed", "does not speak TLS"}},
		{"plaintext to tls", plainTLS.addr, kafka.TLS{}, admin, []string{"broker " + plainTLS.addr + " speaks TLS", "--tls"}},
		{"wrong CA", plainTLS.addr, kafka.TLS{CAFile: pki.OtherCAFile}, admin,
			[]string{"TLS handshake with broker " + plainTLS.addr + " failed", "not signed by a CA of --tls-ca " + pki.OtherCAFile}},
		{"no client certificate", mutualTLS.addr, kafka.TLS{CAFile: pki.CAFile}, admin,
			[]string{"TLS handshake with broker " + mutualTLS.addr + " failed", "requires a client certificate", "--tls-cert"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sasl.secConfig(t, tc.tls, tc.sasl)
			cfg.Brokers = []string{tc.addr}
			err := start(t, stCountJob("sec", nil), cfg).wait()
			checkMessage(t, "Run", err, tc.want...)
			if p := tc.sasl.Password; p != "" && strings.Contains(err.Error(), p) {
				t.Errorf("the error shows the password")
			}
		})
	}
	_ = job
}

// A job whose user the ACLs refuse an operation it needs stops with an
// error naming the topic, group or transactional ID and the operation,
// whether the refusal meets it at start (reading its input, creating its
// changelog, joining its group, its transactional ID) or mid-run (writing
// its output once the ACL is removed).
func TestACLs(t *testing.T) {
	const job = "acl"
	T, G, X := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup, kmsg.ACLResourceTypeTransactionalId
	R, W, C, D := kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationCreate, kmsg.ACLOperationDescribe
	changelog := job + "-counts-changelog"
	// grants returns the ACLs the job needs, but for the one named by
	// skip ("in", "out", "changelog", "group", "txn"), which gets only
	// what replace says.
	grants := func(skip string, replace ...kfake.ACL) []kfake.ACL {
		var acls []kfake.ACL
		for _, g := range []struct {
			key  string
			acls []kfake.ACL
		}{
			{"in", allow(T, "in", R)},
			{"out", allow(T, "out", W)},
			{"changelog", allow(T, changelog, C, R, W)},
			{"group", allow(G, job, R)},
			{"txn", allow(X, job+"-tx", W)},
		} {
			if g.key != skip {
				acls = append(acls, g.acls...)
			}
		}
		return append(acls, replace...)
	}
	user := kafka.SASL{Mechanism: "SCRAM-SHA-512", User: "job", Password: "job-pw"}

	t.Run("all granted", func(t *testing.T) {
		for _, eos := range []bool{false, true} {
			b := newSecBroker(t, nil, 100, kfake.EnableACLs(), kfake.User("SCRAM-SHA-512", "job", "job-pw", grants("")...))
			cfg := b.secConfig(t, kafka.TLS{}, user)
			if eos {
				cfg.Processing, cfg.TransactionalID = runner.ExactlyOnce, job+"-tx"
			}
			if err := runToEnd(t, stCountJob(job, nil), cfg); err != nil {
				t.Fatalf("Run (exactly-once %v): %v", eos, err)
			}
			b.checkCounted(job, 100, eos)
		}
	})

	for _, tc := range []struct {
		name string
		acls []kfake.ACL
		eos  bool
		want []string
	}{
		{"input not described", grants("in"), false,
			[]string{`topic "in" denied by ACLs for operation Describe to user "job"`, "needs Read on it"}},
		{"input not read", grants("in", allow(T, "in", D)...), false,
			[]string{"read in/", `topic "in" denied by ACLs for operation Read to user "job"`, `grant Read on topic "in"`}},
		{"output not described", grants("out"), false,
			[]string{`topic "out" denied by ACLs for operation Describe`, "needs Write on it"}},
		{"output not written", grants("out", allow(T, "out", D)...), false,
			[]string{"write to out/", `topic "out" denied by ACLs for operation Write to user "job"`}},
		{"changelog not created", grants("changelog", allow(T, changelog, D)...), false,
			[]string{`create internal topic "` + changelog + `"`, `topic "` + changelog + `" denied by ACLs for operation Create`}},
		{"changelog not described", grants("changelog"), false,
			[]string{`topic "` + changelog + `" denied by ACLs for operation Describe`, "needs Create, Read and Write"}},
		{"group", grants("group"), false,
			[]string{`group "acl" denied by ACLs for operation Read to user "job"`}},
		{"transactional id", grants("txn"), true,
			[]string{`transactional id "acl-tx" denied by ACLs for operation Write to user "job"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newSecBroker(t, nil, 100, kfake.EnableACLs(), kfake.User("SCRAM-SHA-512", "job", "job-pw", tc.acls...))
			cfg := b.secConfig(t, kafka.TLS{}, user)
			if tc.eos {
				cfg.Processing, cfg.TransactionalID = runner.ExactlyOnce, job+"-tx"
			}
			cfg.UntilEnd = true
			checkMessage(t, "Run", start(t, stCountJob(job, nil), cfg).wait(), tc.want...)
		})
	}

	t.Run("output refused mid-run", func(t *testing.T) {
		b := newSecBroker(t, nil, 100, kfake.EnableACLs(), kfake.User("SCRAM-SHA-512", "job", "job-pw", grants("", allow(T, "out", D)...)...))
		rn := start(t, stCountJob(job, nil), b.secConfig(t, kafka.TLS{}, user))
		b.waitCommitted(job, "in")
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		del := kadm.NewACLs().Topics("out").Operations(kadm.OpWrite).Allow("User:job").AllowHosts().ResourcePatternType(kadm.ACLPatternLiteral)
		if _, err := b.adm.DeleteACLs(ctx, del); err != nil {
			t.Fatalf("delete the ACL: %v", err)
		}
		b.produce(seqRecords("in", 100, 50, 7)...)
		checkMessage(t, "Run", rn.wait(), "write to out/", `topic "out" denied by ACLs for operation Write to user "job"`)
	})
}

var _ = stream.NewJob
