package runner

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// brokerStale is how long a broker's last failed connection counts
// against readiness when no newer attempt was made. A client that still
// needs a broker retries it well within this (kgo backs off to at most a
// second or so between dials); one that stopped trying (the broker left
// the cluster, its partitions moved) does not keep the runner unready.
const brokerStale = 15 * time.Second

// brokerHealth follows the connections every client of a runner opens to
// the brokers, through a kgo hook, and says whether the brokers can be
// reached. It logs once when a broker becomes unreachable and once when
// it is back, however many times the clients retry in between. Safe for
// concurrent use.
type brokerHealth struct {
	log   hclog.Logger
	gauge prometheus.Gauge // 1 while every broker in use is reachable
	now   func() time.Time

	mu struct {
		sync.Mutex
		brokers map[string]*brokerConn // by host:port
	}
}

// brokerConn is what is known of the connections to one broker.
type brokerConn struct {
	failing   bool      // the last attempt failed
	lastErr   error     // its error
	lastFail  time.Time // when
	downSince time.Time // the first failure since the last success
}

var (
	_ kgo.HookBrokerConnect = (*brokerHealth)(nil)
	_ kgo.HookBrokerRead    = (*brokerHealth)(nil)
)

func newBrokerHealth(log hclog.Logger, reg prometheus.Registerer, job string) *brokerHealth {
	h := &brokerHealth{
		log: log,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "samsa_brokers_reachable",
			Help:        "1 while every broker the instance uses can be reached and accepts its connections, 0 while one cannot.",
			ConstLabels: prometheus.Labels{"job": job},
		}),
		now: time.Now,
	}
	h.mu.brokers = map[string]*brokerConn{}
	h.gauge.Set(1)
	reg.MustRegister(h.gauge)
	return h
}

func brokerAddr(meta kgo.BrokerMetadata) string {
	return net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))
}

// OnBrokerConnect implements kgo.HookBrokerConnect: err is a failed dial,
// TLS handshake or SASL authentication.
func (h *brokerHealth) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.failed(brokerAddr(meta), err)
	} else {
		h.succeeded(brokerAddr(meta))
	}
}

// OnBrokerRead implements kgo.HookBrokerRead: a response read is proof
// that the broker is there. Read errors are not counted against it: a
// connection cut while idle is redialled, and that dial tells.
func (h *brokerHealth) OnBrokerRead(meta kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err == nil {
		h.succeeded(brokerAddr(meta))
	}
}

func (h *brokerHealth) failed(addr string, err error) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.mu.brokers[addr]
	if b == nil {
		b = &brokerConn{}
		h.mu.brokers[addr] = b
	}
	if !b.failing {
		b.failing, b.downSince = true, now
		h.log.Warn("cannot reach a broker; retrying with backoff until it is back (the instance reports not ready meanwhile)", "broker", addr, "error", err)
	}
	b.lastErr, b.lastFail = err, now
	h.gauge.Set(0)
}

func (h *brokerHealth) succeeded(addr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.mu.brokers[addr]
	if b == nil || !b.failing {
		return
	}
	b.failing = false
	h.log.Info("broker reachable again", "broker", addr, "down_for", h.now().Sub(b.downSince).Round(time.Millisecond))
	h.setGaugeLocked(h.now())
}

func (h *brokerHealth) setGaugeLocked(now time.Time) {
	for _, b := range h.mu.brokers {
		if b.failing && now.Sub(b.lastFail) < brokerStale {
			h.gauge.Set(0)
			return
		}
	}
	h.gauge.Set(1)
}

// check returns nil if every broker in use can be reached, or an error
// naming those that cannot, since when, and why.
func (h *brokerHealth) check() error {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setGaugeLocked(now) // a broker no longer tried stops counting
	var down []string
	for _, addr := range slices.Sorted(maps.Keys(h.mu.brokers)) {
		b := h.mu.brokers[addr]
		if b.failing && now.Sub(b.lastFail) < brokerStale {
			down = append(down, fmt.Sprintf("%s unreachable for %s: %v", addr, now.Sub(b.downSince).Round(time.Second), b.lastErr))
		}
	}
	if len(down) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", errBrokersUnreachable, strings.Join(down, "; "))
}

// errBrokersUnreachable is the error of brokerHealth.check.
var errBrokersUnreachable = errors.New("runner: brokers unreachable")

// pollError returns the error with which a poll's fetch error stops the
// job, or nil for one the client recovers from by itself: a lost group
// session (the brokers were unreachable for longer than the session
// timeout, or restarted and forgot the member) has already given the
// instance's tasks up, through the lost callback, and the client rejoins
// the group as soon as it can. Errors the instance cannot outwait (its
// credentials or ACLs refused) stop it.
func (m *member) pollError(topic string, partition int32, err error) error {
	var session *kgo.ErrGroupSession
	if errors.As(err, &session) {
		if permanent(session.Err) {
			return fmt.Errorf("runner: consumer group %q: %w", m.r.topo.Name(), m.r.denied(session.Err, "", ""))
		}
		m.log.Warn("lost the consumer-group session; its tasks were given up uncommitted and are re-processed from the last commit once the group is joined again",
			"group", m.r.topo.Name(), "error", session.Err)
		return nil
	}
	return fmt.Errorf("runner: read %s/%d: %w", topic, partition, m.r.denied(err, topic, "Read"))
}

// permanent reports whether a broker error is one that waiting does not
// cure: rejected credentials, a refused ACL, a certificate that does not
// verify. Anything else (unreachable brokers, coordinators moving, a
// restarted broker) is retried.
func permanent(err error) bool {
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed),
		errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		errors.Is(err, kerr.DelegationTokenAuthorizationFailed),
		errors.As(err, &unknownAuthority),
		errors.As(err, &hostname),
		errors.As(err, &invalid):
		return true
	}
	return false
}

// transient reports whether err is a broker error that waiting can cure:
// the brokers unreachable or restarting, a request timed out, a
// coordinator moving. The runner outwaits these, reporting not ready,
// instead of stopping.
func transient(err error) bool {
	if err == nil || permanent(err) {
		return false
	}
	var op *net.OpError
	return errors.Is(err, errBrokersUnreachable) || kgo.IsRetryableBrokerErr(err) || kerr.IsRetriable(err) || errors.As(err, &op) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) // a request's own timeout: the caller checked its context
}

// outageBackoff bounds the wait between retries of work that failed
// because the brokers could not be reached.
const (
	outageBackoffMin = 100 * time.Millisecond
	outageBackoffMax = 5 * time.Second
)

// outwait reports whether err, which stopped what, is transient: then it
// logs it, waits a backoff that doubles while the failures go on (up to
// outageBackoffMax, or until ctx ends), and the caller retries. A
// permanent error, or any error once ctx is done, is returned to stop the
// job.
func (m *member) outwait(ctx context.Context, what string, err error) bool {
	if ctx.Err() != nil || !transient(err) {
		return false
	}
	m.backoff = min(max(2*m.backoff, outageBackoffMin), outageBackoffMax)
	m.log.Warn(what+" failed: the brokers cannot be reached; retrying", "error", err, "retry_in", m.backoff)
	select {
	case <-ctx.Done():
	case <-time.After(m.backoff):
	}
	return true
}

// stopContext returns a context that ends timeout after ctx does: the
// writes of outputs and changelog records use it, so that none of them
// waits for an unreachable broker past a shutdown's deadline
// (Config.ShutdownTimeout).
func stopContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	stopCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(timeout, cancel) })
	return stopCtx, func() { stop(); cancel() }
}

// finalCommitError explains a shutdown's failed commit.
func finalCommitError(err error, timeout time.Duration) error {
	if !transient(err) && !errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("runner: stopped without a final commit: the brokers did not take the last outputs and offsets within %s; the input processed since the last commit is processed again by the next run (%w)", timeout, err)
}
