package runner

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/samsa-go/samsa/connectors/embedded"
)

// adminFlags are the flags of the commands that operate a job without
// running it (describe, status, replay): how to reach its brokers.
type adminFlags struct {
	brokerFlags
	listen         string
	stateDir       string
	connectTimeout time.Duration
}

func (c *cli) adminFlagSet(cmd string) (*flagSet, *adminFlags) {
	f := newFlagSet(cmd)
	a := &adminFlags{}
	a.brokerFlags.register(f)
	f.String(&a.listen, "embedded-listen", embedded.DefaultListen, "`host:port` of the job's embedded broker, used when --brokers is empty")
	f.String(&a.stateDir, "state-dir", filepath.Join(os.TempDir(), "samsa", c.job.Name()), "`dir`ectory of the job's local state and embedded broker data")
	f.Duration(&a.connectTimeout, "connect-timeout", defaultConfig.ConnectTimeout, "how long to wait for the brokers at start")
	return f, a
}

// parse parses args into a, for command cmd.
func (c *cli) parseAdmin(f *flagSet, a *adminFlags, args []string) (Config, error) {
	if err := f.parse(args, c.env); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, usageError{err}
	}
	var cfg Config
	if err := a.brokerFlags.resolve(&cfg); err != nil {
		return Config{}, usageError{err}
	}
	if a.connectTimeout <= 0 {
		return Config{}, usageError{fmt.Errorf("flag --connect-timeout: %s: must be positive", a.connectTimeout)}
	}
	cfg.StateDir = a.stateDir
	cfg.EmbeddedListen = a.listen
	cfg.ConnectTimeout = a.connectTimeout
	// Warnings and errors only: these commands print what they did.
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: c.job.Name(), Level: hclog.Warn, Output: c.stderr})
	cfg.EnsureDefaults(c.job.Name())
	return cfg, nil
}

// jobBrokers is an admin connection to a job's brokers.
type jobBrokers struct {
	adm   *kadm.Client
	cfg   Config // with Brokers set
	where string // for messages: "brokers a:9092,b:9092"
	close func()
}

// errNoBroker is returned by connectJob when no broker was given and no
// embedded broker listens.
var errNoBroker = errors.New("no broker reachable")

// connectJob connects to the job's brokers: those of --brokers; without
// them, the embedded broker listening at --embedded-listen (a running
// instance's, or `samsa broker`); failing that, if orStart, an
// embedded broker started here on the job's data under --state-dir, as
// `run` would start it.
func connectJob(ctx context.Context, cfg Config, orStart bool) (*jobBrokers, error) {
	stop := func() {}
	where := "brokers " + strings.Join(cfg.Brokers, ",")
	if len(cfg.Brokers) == 0 {
		switch {
		case listening(cfg.EmbeddedListen):
			cfg.Brokers = []string{cfg.EmbeddedListen}
			where = "the embedded broker at " + cfg.EmbeddedListen
		case orStart:
			dir := filepath.Join(cfg.StateDir, "broker")
			if _, err := os.Stat(dir); err != nil {
				return nil, fmt.Errorf("no --brokers given, no broker listens at %s, and %s holds no embedded broker data (%v): has the job run here?",
					cfg.EmbeddedListen, dir, err)
			}
			quiet := cfg
			quiet.Logger = cfg.Logger.Named("broker")
			b, err := startEmbedded(quiet, dir)
			if err != nil {
				return nil, err
			}
			cfg.Brokers, stop = []string{b.Addr()}, b.Close
			where = "the embedded broker data in " + dir
		default:
			return nil, fmt.Errorf("%w: no --brokers given and no embedded broker listens at %s", errNoBroker, cfg.EmbeddedListen)
		}
	}
	adm, closeAdm, err := adminClient(ctx, cfg)
	if err != nil {
		stop()
		return nil, err
	}
	return &jobBrokers{adm: adm, cfg: cfg, where: where, close: func() { closeAdm(); stop() }}, nil
}

// listening reports whether something accepts TCP connections at addr.
func listening(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// liveMembers returns the members of the job's consumer group, one line
// each, or none if no instance of the job is running.
func liveMembers(ctx context.Context, adm *kadm.Client, group string) ([]string, error) {
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("describe group %q: %w", group, err)
	}
	g, ok := described[group]
	if !ok {
		return nil, nil
	}
	if g.Err != nil && !errors.Is(g.Err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("describe group %q: %w", group, g.Err)
	}
	var out []string
	for _, m := range g.Members {
		out = append(out, fmt.Sprintf("%s (client %s on %s)", m.MemberID, m.ClientID, strings.TrimPrefix(m.ClientHost, "/")))
	}
	return out, nil
}

// usageExcept writes the help of the flags of f not in seen, and adds
// them to seen.
func (f *flagSet) usageExcept(w io.Writer, seen map[string]bool) {
	rest := &flagSet{fs: f.fs}
	for _, s := range f.specs {
		if !seen[s.name] {
			seen[s.name] = true
			rest.specs = append(rest.specs, s)
		}
	}
	rest.usage(w)
}
