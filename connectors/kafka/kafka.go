// Package kafka connects samsa to Kafka-protocol brokers: the franz-go
// client options for a set of brokers with TLS and SASL, and a start-up
// check that turns an unreachable broker or bad credentials into one clear
// error instead of endless retries.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Config says how to reach the brokers.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ClientID names the client to the brokers.
	ClientID string
	TLS      TLS
	SASL     SASL
	// Logger receives the client's warnings and errors; nil discards them.
	Logger hclog.Logger
}

// TLS configures TLS to the brokers. It is on if Enable is set or any file
// is given.
type TLS struct {
	Enable             bool
	CAFile             string // PEM CA bundle; empty uses the system roots
	CertFile, KeyFile  string // PEM client certificate and key, for mutual TLS
	ServerName         string // overrides the name checked in the broker's certificate
	InsecureSkipVerify bool
}

func (t TLS) enabled() bool {
	return t.Enable || t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
}

// SASL configures SASL authentication. Mechanism empty means none.
type SASL struct {
	Mechanism string // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (any case)
	User      string
	Password  string
}

// Opts returns the franz-go options for the configuration: seeds, TLS,
// SASL, client ID and logger.
func (c Config) Opts() ([]kgo.Opt, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers given")
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, fmt.Errorf("kafka: broker address %q: want host:port", b)
		}
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.Logger != nil {
		opts = append(opts, kgo.WithLogger(Logger(c.Logger)))
	}
	if c.TLS.enabled() {
		tc, err := c.TLS.config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if c.SASL.Mechanism != "" {
		m, err := c.SASL.mechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

func (t TLS) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // an explicit user choice
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka: TLS CA file %s: no PEM certificates in it", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("kafka: TLS client certificate and key must be given together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: TLS client certificate %s / key %s: %w", t.CertFile, t.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (s SASL) mechanism() (sasl.Mechanism, error) {
	if s.User == "" {
		return nil, fmt.Errorf("kafka: SASL %s needs a user", s.Mechanism)
	}
	switch strings.ToUpper(s.Mechanism) {
	case "PLAIN":
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism(), nil
	default:
		return nil, fmt.Errorf("kafka: SASL mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
	}
}

// Check verifies that the brokers can be reached and that they accept the
// client's TLS and SASL settings, within timeout. Its error says which
// broker and what failed: no broker reachable (with the dial error), TLS
// to a plaintext listener or plaintext to a TLS one, a TLS handshake that
// failed (a certificate no trusted CA signed, a missing client
// certificate), or authentication the brokers rejected, naming the user
// and mechanism. It never waits past timeout.
func Check(ctx context.Context, c Config, cl *kgo.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// A plain dial first: it tells "nothing listens there" apart from
	// protocol trouble, which kgo would otherwise retry until the timeout.
	var dialErrs []error
	addr := ""
	for _, b := range c.Brokers {
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			conn.Close()
			addr = b
			break
		}
		dialErrs = append(dialErrs, err)
	}
	if addr == "" {
		return fmt.Errorf("kafka: no broker reachable at %s: %w", strings.Join(c.Brokers, ","), errors.Join(dialErrs...))
	}
	if err := c.checkTransport(ctx, addr, timeout); err != nil {
		return err
	}

	_, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err == nil {
		return nil
	}
	brokers := strings.Join(c.Brokers, ",")
	mech := strings.ToUpper(c.SASL.Mechanism)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("kafka: authentication failed for user %q with mechanism %s at brokers %s (check --sasl-user, --sasl-mechanism and the password): %w",
			c.SASL.User, mech, brokers, err)
	case c.SASL.Mechanism != "" && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		// Some brokers, kfake among them, hang up on failed
		// authentication instead of answering with an error.
		return fmt.Errorf("kafka: authentication failed for user %q with mechanism %s at brokers %s: they closed the connection during authentication "+
			"(a wrong password, an unknown user, or a mechanism the brokers do not offer; check --sasl-user, --sasl-mechanism and the password) (%v)",
			c.SASL.User, mech, brokers, err)
	case errors.Is(err, context.DeadlineExceeded):
		hint := ""
		if !c.TLS.enabled() {
			hint = " (does the broker expect TLS or SASL?)"
		}
		return fmt.Errorf("kafka: brokers %s did not answer within %s%s", brokers, timeout, hint)
	default:
		if tlsErr := explainTLS(addr, c.TLS, err); tlsErr != nil {
			return tlsErr
		}
		return fmt.Errorf("kafka: brokers %s: %w", brokers, err)
	}
}

// checkTransport checks that the broker at addr speaks what the client
// will: TLS with a certificate the client trusts (and one the broker
// accepts), or plaintext. It asks for the broker's API versions, which
// every Kafka-protocol broker answers before authentication.
func (c Config) checkTransport(ctx context.Context, addr string, timeout time.Duration) error {
	// A TLS ClientHello sent to a plaintext listener can go unanswered
	// (the broker reads it as the start of a huge request): a probe
	// waits a third of the timeout, leaving the rest to the real check.
	short := timeout / 3
	if !c.TLS.enabled() {
		if probe(ctx, addr, nil, short) == nil {
			return nil
		}
		// Does it speak TLS instead? Any answer to a handshake says so.
		err := probe(ctx, addr, &tls.Config{InsecureSkipVerify: true}, short) //nolint:gosec // only to tell TLS from plaintext
		if _, isAlert := remoteAlert(err); err == nil || isAlert {
			return fmt.Errorf("kafka: broker %s speaks TLS and the client plaintext: give --tls (and --tls-ca with the CA that signed its certificate)", addr)
		}
		return nil // kgo's own error will say more
	}
	tc, err := c.TLS.config()
	if err != nil {
		return err
	}
	err = probe(ctx, addr, tc, short)
	if err == nil {
		return nil
	}
	if tlsErr := explainTLS(addr, c.TLS, err); tlsErr != nil {
		return tlsErr
	}
	if probe(ctx, addr, nil, short) == nil {
		return fmt.Errorf("kafka: TLS handshake with broker %s failed: it answered in plaintext, so it does not speak TLS there (drop --tls and the --tls-* flags, or give the address of its TLS listener): %w", addr, err)
	}
	return fmt.Errorf("kafka: TLS handshake with broker %s failed: %w", addr, err)
}

// explainTLS returns the error of a failed TLS handshake with broker addr
// that says what to check, or nil if err is not about TLS.
func explainTLS(addr string, t TLS, err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	alert, isAlert := remoteAlert(err)
	ca := "the system's CAs (give --tls-ca)"
	if t.CAFile != "" {
		ca = "--tls-ca " + t.CAFile
	}
	switch {
	case errors.As(err, &hostname):
		return fmt.Errorf("kafka: TLS handshake with broker %s failed: its certificate is not for the name dialed (check --brokers or --tls-server-name): %w", addr, err)
	case errors.As(err, &unknown):
		return fmt.Errorf("kafka: TLS handshake with broker %s failed: its certificate is not signed by a CA of %s: %w", addr, ca, err)
	case errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("kafka: TLS handshake with broker %s failed: its certificate does not verify against %s: %w", addr, ca, err)
	case isAlert && t.CertFile == "" && (alert == "tls: certificate required" || alert == "tls: bad certificate" || alert == "tls: handshake failure"):
		return fmt.Errorf("kafka: TLS handshake with broker %s failed: it requires a client certificate (give --tls-cert and --tls-key): %w", addr, err)
	case isAlert && t.CertFile != "":
		return fmt.Errorf("kafka: TLS handshake with broker %s failed: it refused the client certificate --tls-cert %s: %w", addr, t.CertFile, err)
	case isAlert:
		return fmt.Errorf("kafka: TLS handshake with broker %s failed: %w", addr, err)
	}
	return nil
}

// remoteAlert returns the TLS alert the broker sent, such as "tls:
// certificate required" (crypto/tls reports one as a net.OpError "remote
// error" around an unexported type). A broker that wants a client
// certificate it did not get sends certificate_required under TLS 1.3,
// bad_certificate or handshake_failure under TLS 1.2.
func remoteAlert(err error) (string, bool) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil {
		return op.Err.Error(), true
	}
	return "", false
}

// probe connects to addr (over TLS if tc is not nil) and asks for the
// broker's API versions, waiting at most wait. It returns nil once a
// Kafka response arrives.
func probe(ctx context.Context, addr string, tc *tls.Config, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if tc != nil {
		tc = tc.Clone()
		if tc.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			tc.ServerName = host
		}
		tconn := tls.Client(conn, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			return err
		}
		conn = tconn
	}
	const correlation = 0x5a5a
	req := kmsg.NewPtrApiVersionsRequest() // version 0: every broker answers it
	buf := kmsg.NewRequestFormatter(kmsg.FormatterClientID("samsa-check")).AppendRequest(nil, req, correlation)
	if _, err := conn.Write(buf); err != nil {
		return err
	}
	var head [8]byte // size, correlation ID
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(head[4:]) != correlation {
		return errors.New("not a Kafka response")
	}
	return nil
}

// DeniedError is a request the brokers refused under their ACLs: which
// operation on which resource, for which user. It wraps the broker's
// error (kerr.TopicAuthorizationFailed and the like).
type DeniedError struct {
	Resource  string // "topic", "group", "transactional id" or "cluster"
	Name      string // of the topic, group or transactional id; empty for the cluster
	Operation string // the ACL operation refused: Read, Write, Create, Describe, IdempotentWrite, ...
	User      string // the SASL user; empty without SASL
	Need      string // what the job needs granted, if more than Operation on the resource
	Err       error
}

func (e *DeniedError) Error() string {
	var b strings.Builder
	b.WriteString("kafka: ")
	b.WriteString(e.Resource)
	if e.Name != "" {
		fmt.Fprintf(&b, " %q", e.Name)
	}
	fmt.Fprintf(&b, " denied by ACLs for operation %s", e.Operation)
	if e.User != "" {
		fmt.Fprintf(&b, " to user %q", e.User)
	} else {
		b.WriteString(" to the client's principal")
	}
	if e.Need != "" {
		fmt.Fprintf(&b, " (%s)", e.Need)
	} else if e.Name != "" {
		fmt.Fprintf(&b, " (grant %s on %s %q", e.Operation, e.Resource, e.Name)
		if e.User != "" {
			b.WriteString(", or check --sasl-user")
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *DeniedError) Unwrap() error { return e.Err }

// IsDenied reports whether err is an authorization error of the brokers:
// a topic, group, transactional ID or cluster operation refused by ACLs.
func IsDenied(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.Is(err, kerr.DelegationTokenAuthorizationFailed)
}

// Denied returns err as a *DeniedError naming the resource and operation
// if it is an authorization error, and err unchanged otherwise (or if it
// already is one). The resource is taken from the error when it says
// otherwise: a cluster or transactional ID refusal met while writing to a
// topic names the cluster or the transactional ID, not the topic.
func Denied(err error, resource, name, operation, user string) error {
	var de *DeniedError
	if err == nil || !IsDenied(err) || errors.As(err, &de) {
		return err
	}
	switch {
	case errors.Is(err, kerr.ClusterAuthorizationFailed) && resource != "cluster":
		return &DeniedError{Resource: "cluster", Operation: "IdempotentWrite", User: user, Err: err,
			Need: fmt.Sprintf("while trying %s on %s %q; an idempotent producer needs IdempotentWrite on the cluster, or Write on a topic", operation, resource, name)}
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed) && resource != "transactional id":
		return &DeniedError{Resource: "transactional id", Operation: "Write", User: user, Err: err,
			Need: fmt.Sprintf("while trying %s on %s %q; under exactly-once the job needs Write and Describe on its transactional ID (--transactional-id)", operation, resource, name)}
	case errors.Is(err, kerr.GroupAuthorizationFailed) && resource != "group":
		return &DeniedError{Resource: "group", Operation: "Read", User: user, Err: err,
			Need: fmt.Sprintf("while trying %s on %s %q; the job needs Read on its consumer group, named after the job", operation, resource, name)}
	}
	return &DeniedError{Resource: resource, Name: name, Operation: operation, User: user, Err: err}
}

// Logger adapts an hclog logger to franz-go's logger interface. franz-go's
// info level is chatty, so it maps to debug.
func Logger(l hclog.Logger) kgo.Logger { return kgoLogger{l} }

type kgoLogger struct{ l hclog.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	switch {
	case k.l.IsTrace(), k.l.IsDebug():
		return kgo.LogLevelDebug
	case k.l.IsInfo(), k.l.IsWarn():
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, keyvals...)
	case kgo.LogLevelWarn:
		k.l.Warn(msg, keyvals...)
	case kgo.LogLevelInfo:
		k.l.Debug(msg, keyvals...)
	default:
		k.l.Trace(msg, keyvals...)
	}
}
