package runner

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestBrokerHealth(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newBrokerHealth(hclog.NewNullLogger(), reg, "job")
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	a := kgo.BrokerMetadata{NodeID: 1, Host: "10.0.0.1", Port: 9092}
	b := kgo.BrokerMetadata{NodeID: 2, Host: "10.0.0.2", Port: 9092}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

	if err := h.check(); err != nil || gaugeValue(t, reg, "samsa_brokers_reachable") != 1 {
		t.Fatalf("fresh: check %v, gauge %v; want reachable", err, gaugeValue(t, reg, "samsa_brokers_reachable"))
	}
	h.OnBrokerConnect(a, 0, nil, nil)
	h.OnBrokerConnect(b, 0, nil, refused)
	now = now.Add(3 * time.Second)
	h.OnBrokerConnect(b, 0, nil, refused) // a retry: still down since the first failure
	err := h.check()
	if err == nil || !errors.Is(err, errBrokersUnreachable) || !strings.Contains(err.Error(), "10.0.0.2:9092 unreachable for 3s") ||
		strings.Contains(err.Error(), "10.0.0.1") || !transient(err) {
		t.Fatalf("one broker down: check %v", err)
	}
	if g := gaugeValue(t, reg, "samsa_brokers_reachable"); g != 0 {
		t.Fatalf("one broker down: gauge %v, want 0", g)
	}

	// A response read from it: it is back.
	h.OnBrokerRead(b, 0, 10, 0, 0, nil)
	if err := h.check(); err != nil || gaugeValue(t, reg, "samsa_brokers_reachable") != 1 {
		t.Fatalf("back: check %v, gauge %v", err, gaugeValue(t, reg, "samsa_brokers_reachable"))
	}

	// A broker the clients stopped dialling stops counting.
	h.OnBrokerConnect(a, 0, nil, refused)
	if h.check() == nil {
		t.Fatal("a failed dial was not reported")
	}
	now = now.Add(brokerStale)
	if err := h.check(); err != nil || gaugeValue(t, reg, "samsa_brokers_reachable") != 1 {
		t.Fatalf("stale failure: check %v, gauge %v; want reachable", err, gaugeValue(t, reg, "samsa_brokers_reachable"))
	}
}

func TestTransient(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		err                  error
		transient, permanent bool
	}{
		{refused, true, false},
		{fmt.Errorf("runner: commit offsets: unable to dial: %w", refused), true, false},
		{io.EOF, true, false},
		{syscall.ECONNRESET, true, false},
		{kerr.NotCoordinator, true, false},
		{kerr.CoordinatorLoadInProgress, true, false},
		{kerr.RequestTimedOut, true, false},
		{context.DeadlineExceeded, true, false},
		{fmt.Errorf("%w: 10.0.0.2:9092 unreachable", errBrokersUnreachable), true, false},
		{kerr.SaslAuthenticationFailed, false, true},
		{kerr.TopicAuthorizationFailed, false, true},
		{kerr.GroupAuthorizationFailed, false, true},
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), false, true},
		{x509.HostnameError{Host: "kafka"}, false, true},
		{kerr.MessageTooLarge, false, false},
		{errors.New("runner: task 0_1: boom"), false, false},
		{nil, false, false},
	} {
		if got := transient(tc.err); got != tc.transient {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.transient)
		}
		if got := permanent(tc.err); got != tc.permanent {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.permanent)
		}
	}
}

func TestStopContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopCtx, stop := stopContext(ctx, 50*time.Millisecond)
	defer stop()
	cancel()
	if stopCtx.Err() != nil {
		t.Fatal("the stop context ended with the run's context; want it to outlive it by the shutdown timeout")
	}
	select {
	case <-stopCtx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stop context did not end after the shutdown timeout")
	}

	// Stopped before the run's context ends: it ends at once.
	stopCtx, stop = stopContext(context.Background(), time.Hour)
	stop()
	if stopCtx.Err() == nil {
		t.Fatal("stop did not end the stop context")
	}
}
