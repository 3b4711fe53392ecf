package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/connectors/kafka"
)

// The job binary's own embedded broker, started with SASL flags, requires
// SASL with that user: the same credentials connect, none or others do not.
func TestEmbeddedBrokerWithSASL(t *testing.T) {
	t.Parallel()
	cfg := Config{
		EmbeddedListen: "127.0.0.1:0",
		Logger:         hclog.NewNullLogger(),
		SASL:           kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "job", Password: "s3cret-pw"},
	}
	b, err := startEmbedded(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	check := func(s kafka.SASL) error {
		kc := kafka.Config{Brokers: []string{b.Addr()}, SASL: s}
		opts, err := kc.Opts()
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		return kafka.Check(context.Background(), kc, cl, 5*time.Second)
	}
	if err := check(cfg.SASL); err != nil {
		t.Errorf("the job's own credentials: %v", err)
	}
	wrong := cfg.SASL
	wrong.Password = "not-it"
	if err := check(wrong); err == nil || !strings.Contains(err.Error(), `user "job"`) {
		t.Errorf("a wrong password: %v; want an authentication error naming the user", err)
	} else if strings.Contains(err.Error(), "not-it") {
		t.Errorf("the error shows the password: %v", err)
	}
	if err := check(kafka.SASL{}); err == nil {
		t.Errorf("no SASL: connected to a broker that requires it")
	}
}
