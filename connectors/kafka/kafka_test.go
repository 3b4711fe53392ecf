package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/connectors/kafka"
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

func TestCheck(t *testing.T) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "ann", "secret"), kfake.Superuser("PLAIN", "bob", "hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	addr := broker.ListenAddrs()

	for _, tc := range []struct {
		name string
		cfg  kafka.Config
		want string // empty: success
	}{
		{"scram", kafka.Config{Brokers: addr, SASL: kafka.SASL{Mechanism: "scram-sha-256", User: "ann", Password: "secret"}}, ""},
		{"plain", kafka.Config{Brokers: addr, SASL: kafka.SASL{Mechanism: "PLAIN", User: "bob", Password: "hunter2"}}, ""},
		{"wrong password", kafka.Config{Brokers: addr, SASL: kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "ann", Password: "nope"}}, `rejected the SASL credentials of user "ann"`},
		{"unknown mechanism", kafka.Config{Brokers: addr, SASL: kafka.SASL{Mechanism: "GSSAPI", User: "ann"}}, `SASL mechanism "GSSAPI"`},
		{"unreachable", kafka.Config{Brokers: []string{"127.0.0.1:1"}}, "no broker reachable at 127.0.0.1:1"},
		{"bad address", kafka.Config{Brokers: []string{"localhost"}}, `broker address "localhost": want host:port`},
		{"missing CA file", kafka.Config{Brokers: addr, TLS: kafka.TLS{CAFile: "/nonexistent/ca.pem"}}, "TLS CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := check(t, tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			case tc.want != "" && strings.Contains(err.Error(), "\n"):
				t.Errorf("error spans lines: %q", err)
			}
			if time.Since(start) > 4*time.Second {
				t.Errorf("took %s: failures must be fast", time.Since(start))
			}
		})
	}
}
