// Package embedded runs a Kafka-protocol broker inside the process: the
// broker a job binary starts when it is given no --brokers, and the one
// `samsa broker` runs standalone. It is franz-go's kfake with a data
// directory, so topics, records, and committed offsets survive a restart.
//
// The embedded broker is for development, tests, and demos: one node, no
// replication. Point production jobs at a real Kafka or Redpanda cluster.
//
// # What survives a crash
//
// With a data directory, the broker writes every produced batch, committed
// offset, transaction marker and producer ID to its files before it
// answers the request, so a broker process killed with SIGKILL comes back
// with everything it acknowledged. Writes go through the operating
// system's page cache without fsync, as Kafka's do by default: a machine
// that loses power can lose the last of them (Kafka's replicas cover for
// that; this broker has none).
//
// What a killed broker does not keep is its producers' sequence numbers,
// which it saves only when it stops cleanly (Kafka rebuilds them from its
// log). A producer that still has writes to retry when the broker comes
// back can then see them refused as out of order; franz-go recovers by
// starting a new sequence and sending them again, and those the broker had
// already written are written twice. At-least-once allows such duplicates.
// Exactly-once is not affected by them: the transactions open when the
// broker died are aborted when it restarts, and read_committed readers
// never see their records. (kfake aborts them without writing abort
// markers, which would hide every later record of their producers from
// read_committed readers; Start writes the markers when it finds that the
// broker did not stop cleanly.) What it cannot survive is a kill in the midst
// of committing a transaction: the broker writes the commit marker of each
// partition, then the transaction's group offsets, one after another, so
// a kill in those few microseconds leaves a transaction half committed.
// Kafka makes that step atomic through its transaction log.
package embedded

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultListen is the address the embedded broker listens on unless told
// otherwise: Kafka's usual port on loopback.
const DefaultListen = "127.0.0.1:9092"

// Config configures an embedded broker. The zero value is usable: it
// listens on DefaultListen and keeps its data in memory only.
type Config struct {
	// DataDir is where the broker keeps its topics, records, and group
	// offsets. Empty keeps everything in memory.
	DataDir string
	// Listen is the host:port to listen on, overriding DefaultListen. Port
	// 0 picks a free port; see Broker.Addr.
	Listen string
	// Logger receives the broker's warnings and errors; nil discards them.
	Logger hclog.Logger
	// TLS, if non-nil, makes the broker accept only TLS connections.
	TLS *tls.Config
	// SASL lists users allowed to connect; if non-empty, the broker
	// requires SASL authentication. Every listed user is a superuser.
	SASL []User
	// SessionTimeoutMin lowers the shortest group session timeout the
	// broker accepts, overriding Kafka's default of 6s (tests use this
	// to notice a killed group member quickly).
	SessionTimeoutMin time.Duration
}

// User is a SASL user of the embedded broker.
type User struct {
	Mechanism string // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (any case)
	Name      string
	Password  string
}

// ServerTLS returns the TLS configuration of a broker that presents the
// PEM certificate and key in certFile and keyFile. If clientCAFile is not
// empty, the broker requires clients to present a certificate signed by a
// CA in it (mutual TLS).
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("embedded: TLS certificate %s / key %s: %w", certFile, keyFile, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("embedded: TLS client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("embedded: TLS client CA file %s: no PEM certificates in it", clientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// Broker is a running embedded broker. It is safe for concurrent use.
type Broker struct {
	c       *kfake.Cluster
	addr    string
	dataDir string
}

// Start starts a broker. It fails with a clear error if the address is
// taken (often: another job's embedded broker; join it with --brokers
// instead) or the data directory is unusable.
func Start(cfg Config) (*Broker, error) {
	listen := cfg.Listen
	if listen == "" {
		listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return nil, fmt.Errorf("embedded: listen address %q: %w", listen, err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ClusterID("samsa-embedded"),
		// kfake binds 127.0.0.1:<port>; we bind the address asked for.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, listen) }),
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("embedded: data directory: %w", err)
		}
		if err := closeOpenTransactions(cfg.DataDir, cfg.Logger); err != nil {
			return nil, err
		}
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(logger{cfg.Logger}))
	}
	if cfg.TLS != nil {
		opts = append(opts, kfake.TLS(cfg.TLS))
	}
	if len(cfg.SASL) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for _, u := range cfg.SASL {
			u.Mechanism = strings.ToUpper(u.Mechanism)
			switch u.Mechanism {
			case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
			default:
				return nil, fmt.Errorf("embedded: SASL user %q: mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", u.Name, u.Mechanism)
			}
			if u.Name == "" || u.Password == "" {
				return nil, fmt.Errorf("embedded: SASL user %q (%s): needs a name and a password", u.Name, u.Mechanism)
			}
			opts = append(opts, kfake.Superuser(u.Mechanism, u.Name, u.Password))
		}
	}
	if cfg.SessionTimeoutMin > 0 {
		opts = append(opts, kfake.GroupMinSessionTimeout(cfg.SessionTimeoutMin))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("embedded: listen %s: address in use (is another broker running there? join it with --brokers %s)", listen, listen)
		}
		if cfg.DataDir != "" {
			return nil, fmt.Errorf("embedded: start broker (data directory %s): %w", cfg.DataDir, err)
		}
		return nil, fmt.Errorf("embedded: start broker: %w", err)
	}
	return &Broker{c: c, addr: c.ListenAddrs()[0], dataDir: cfg.DataDir}, nil
}

// Addr returns the host:port the broker listens on.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker, writing its state to the data directory. It is
// idempotent.
func (b *Broker) Close() {
	b.c.Close()
	if b.dataDir != "" {
		// The next start need not look for transactions left open
		// (see closeOpenTransactions).
		_ = os.WriteFile(filepath.Join(b.dataDir, cleanStopFile), nil, 0o644)
	}
}

type logger struct{ l hclog.Logger }

func (l logger) Logf(level kfake.LogLevel, format string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.l.Error(fmt.Sprintf(format, args...))
	case kfake.LogLevelWarn:
		l.l.Warn(fmt.Sprintf(format, args...))
	case kfake.LogLevelInfo:
		l.l.Debug(fmt.Sprintf(format, args...))
	default:
		l.l.Trace(fmt.Sprintf(format, args...))
	}
}
