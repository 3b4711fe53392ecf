package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/connectors/kafka"
	"github.com/samsa-go/samsa/internal/testpki"
)

func check(t *testing.T, c kafka.Config) error {
	t.Helper()
	opts, err := c.Opts()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	return kafka.Check(context.Background(), c, cl, 5*time.Second)
}

func cluster(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// Check passes with the settings the brokers want, and fails with one
// line naming the broker and the cause otherwise, instead of retrying
// until the timeout.
func TestCheck(t *testing.T) {
	pki := testpki.New(t)
	sasl := cluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "ann", "secret"),
		kfake.Superuser("PLAIN", "bob", "hunter2"), kfake.Superuser("SCRAM-SHA-512", "cy", "s3cret"))
	plain := cluster(t)
	tlsB := cluster(t, kfake.TLS(pki.ServerConfig(t, false)))
	mtls := cluster(t, kfake.TLS(pki.ServerConfig(t, true)))
	tlsSASL := cluster(t, kfake.TLS(pki.ServerConfig(t, true)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "cy", "s3cret"))
	ca := kafka.TLS{CAFile: pki.CAFile}
	mutual := kafka.TLS{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}

	for _, tc := range []struct {
		name string
		cfg  kafka.Config
		want []string // empty: success
	}{
		{"scram-sha-256", kafka.Config{Brokers: sasl, SASL: kafka.SASL{Mechanism: "scram-sha-256", User: "ann", Password: "secret"}}, nil},
		{"scram-sha-512", kafka.Config{Brokers: sasl, SASL: kafka.SASL{Mechanism: "SCRAM-SHA-512", User: "cy", Password: "s3cret"}}, nil},
		{"plain", kafka.Config{Brokers: sasl, SASL: kafka.SASL{Mechanism: "PLAIN", User: "bob", Password: "hunter2"}}, nil},
		{"tls", kafka.Config{Brokers: tlsB, TLS: ca}, nil},
		{"mutual tls", kafka.Config{Brokers: mtls, TLS: mutual}, nil},
		{"mutual tls and sasl", kafka.Config{Brokers: tlsSASL, TLS: mutual, SASL: kafka.SASL{Mechanism: "SCRAM-SHA-512", User: "cy", Password: "s3cret"}}, nil},

		{"wrong password", kafka.Config{Brokers: sasl, SASL: kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "ann", Password: "nope"}},
			[]string{`authentication failed for user "ann" with mechanism SCRAM-SHA-256`, sasl[0]}},
		{"wrong plain password", kafka.Config{Brokers: sasl, SASL: kafka.SASL{Mechanism: "plain", User: "bob", Password: "nope"}},
			[]string{`authentication failed for user "bob" with mechanism PLAIN`}},
		{"unknown user", kafka.Config{Brokers: sasl, SASL: kafka.SASL{Mechanism: "SCRAM-SHA-512", User: "eve", Password: "s3cret"}},
			[]string{`authentication failed for user "eve" with mechanism SCRAM-SHA-512`}},
		{"no credentials", kafka.Config{Brokers: sasl}, []string{sasl[0], "SASL"}},
		{"wrong password over tls", kafka.Config{Brokers: tlsSASL, TLS: mutual, SASL: kafka.SASL{Mechanism: "SCRAM-SHA-512", User: "cy", Password: "nope"}},
			[]string{`authentication failed for user "cy" with mechanism SCRAM-SHA-512`}},
		{"unknown mechanism", kafka.Config{Brokers: sasl, SASL: kafka.SASL{Mechanism: "GSSAPI", User: "ann"}}, []string{`SASL mechanism "GSSAPI"`}},

		{"tls to plaintext", kafka.Config{Brokers: plain, TLS: ca}, []string{"TLS handshake with broker " + plain[0] + " failed", "answered in plaintext"}},
		{"plaintext to tls", kafka.Config{Brokers: tlsB}, []string{"broker " + tlsB[0] + " speaks TLS", "--tls"}},
		{"plaintext to mutual tls", kafka.Config{Brokers: mtls}, []string{"broker " + mtls[0] + " speaks TLS", "--tls"}},
		{"wrong CA", kafka.Config{Brokers: tlsB, TLS: kafka.TLS{CAFile: pki.OtherCAFile}},
			[]string{"TLS handshake with broker " + tlsB[0] + " failed", "not signed by a CA of --tls-ca " + pki.OtherCAFile}},
		{"system CAs", kafka.Config{Brokers: tlsB, TLS: kafka.TLS{Enable: true}}, []string{"TLS handshake with broker " + tlsB[0] + " failed", "give --tls-ca"}},
		{"wrong server name", kafka.Config{Brokers: tlsB, TLS: kafka.TLS{CAFile: pki.CAFile, ServerName: "broker.example.com"}},
			[]string{"TLS handshake with broker " + tlsB[0] + " failed", "--tls-server-name"}},
		{"no client certificate", kafka.Config{Brokers: mtls, TLS: ca},
			[]string{"TLS handshake with broker " + mtls[0] + " failed", "requires a client certificate", "--tls-cert"}},
		{"client certificate and key mismatch", kafka.Config{Brokers: mtls, TLS: kafka.TLS{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ServerKey}},
			[]string{"TLS client certificate " + pki.ClientCert}},

		{"unreachable", kafka.Config{Brokers: []string{"127.0.0.1:1"}}, []string{"no broker reachable at 127.0.0.1:1"}},
		{"bad address", kafka.Config{Brokers: []string{"localhost"}}, []string{`broker address "localhost": want host:port`}},
		{"missing CA file", kafka.Config{Brokers: tlsB, TLS: kafka.TLS{CAFile: "/nonexistent/ca.pem"}}, []string{"TLS CA file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(t, tc.cfg)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", tc.want)
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if p := tc.cfg.SASL.Password; p != "" && strings.Contains(err.Error(), p) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// Denied names the resource, operation and user, says what to grant, and
// keeps the broker's error.
func TestDenied(t *testing.T) {
	for _, tc := range []struct {
		err                      error
		resource, name, op, user string
		want                     string
	}{
		{kerr.TopicAuthorizationFailed, "topic", "out", "Write", "job",
			`kafka: topic "out" denied by ACLs for operation Write to user "job" (grant Write on topic "out", or check --sasl-user): TOPIC_AUTHORIZATION_FAILED`},
		{kerr.GroupAuthorizationFailed, "group", "wc", "Read", "",
			`kafka: group "wc" denied by ACLs for operation Read to the client's principal (grant Read on group "wc"): GROUP_AUTHORIZATION_FAILED`},
		{fmt.Errorf("produce: %w", kerr.ClusterAuthorizationFailed), "topic", "out", "Write", "job",
			`kafka: cluster denied by ACLs for operation IdempotentWrite to user "job" (while trying Write on topic "out"; an idempotent producer needs IdempotentWrite on the cluster, or Write on a topic): produce: CLUSTER_AUTHORIZATION_FAILED`},
		{kerr.TransactionalIDAuthorizationFailed, "topic", "out", "Write", "job",
			`kafka: transactional id denied by ACLs for operation Write to user "job" (while trying Write on topic "out"; under exactly-once the job needs Write and Describe on its transactional ID (--transactional-id)): TRANSACTIONAL_ID_AUTHORIZATION_FAILED`},
	} {
		err := kafka.Denied(tc.err, tc.resource, tc.name, tc.op, tc.user)
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got  %q\nwant %q...", err, tc.want)
		}
		if !errors.Is(err, tc.err) && !errors.Is(err, errors.Unwrap(tc.err)) {
			t.Errorf("%v does not wrap %v", err, tc.err)
		}
		if again := kafka.Denied(fmt.Errorf("wrapped: %w", err), "topic", "other", "Read", "x"); !strings.Contains(again.Error(), err.Error()) || strings.Contains(again.Error(), "other") {
			t.Errorf("Denied of a DeniedError changed it: %v", again)
		}
	}
	if err := kafka.Denied(kerr.NotLeaderForPartition, "topic", "t", "Write", ""); err != kerr.NotLeaderForPartition {
		t.Errorf("Denied changed a non-authorization error: %v", err)
	}
}
