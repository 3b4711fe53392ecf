// Package kafka connects samsa to Kafka-protocol brokers: the franz-go
// client options for a set of brokers with TLS and SASL, and a start-up
// check that turns an unreachable broker or bad credentials into one clear
// error instead of endless retries.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
// client's credentials, within timeout. Its error says which: no broker
// reachable (with the dial error), TLS handshake failure, or rejected
// authentication.
func Check(ctx context.Context, c Config, cl *kgo.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// A plain dial first: it tells "nothing listens there" apart from
	// protocol trouble, which kgo would otherwise retry until the timeout.
	var dialErrs []error
	for _, b := range c.Brokers {
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			conn.Close()
			dialErrs = nil
			break
		}
		dialErrs = append(dialErrs, err)
	}
	if len(dialErrs) > 0 {
		return fmt.Errorf("kafka: no broker reachable at %s: %w", strings.Join(c.Brokers, ","), errors.Join(dialErrs...))
	}

	_, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("kafka: brokers %s rejected the SASL credentials of user %q: %w", strings.Join(c.Brokers, ","), c.SASL.User, err)
	case c.SASL.Mechanism != "" && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		// Some brokers hang up on failed authentication instead of
		// answering with an error.
		return fmt.Errorf("kafka: brokers %s closed the connection during SASL %s authentication: rejected the SASL credentials of user %q? (%v)",
			strings.Join(c.Brokers, ","), strings.ToUpper(c.SASL.Mechanism), c.SASL.User, err)
	case errors.Is(err, context.DeadlineExceeded):
		hint := ""
		if !c.TLS.enabled() {
			hint = " (does the broker expect TLS or SASL?)"
		}
		return fmt.Errorf("kafka: brokers %s did not answer within %s%s", strings.Join(c.Brokers, ","), timeout, hint)
	default:
		return fmt.Errorf("kafka: brokers %s: %w", strings.Join(c.Brokers, ","), err)
	}
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
