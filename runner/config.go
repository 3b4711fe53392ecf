package runner

import (
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/samsa-go/samsa/connectors/embedded"
	"github.com/samsa-go/samsa/connectors/kafka"
	"github.com/samsa-go/samsa/stream"
)

// Config configures a [Runner]. The zero value, after EnsureDefaults, runs
// the job on an embedded broker with at-least-once processing.
type Config struct {
	// Brokers are the Kafka brokers to use. Empty starts an embedded
	// broker (see package connectors/embedded) with its data under
	// StateDir, listening on EmbeddedListen.
	Brokers []string
	// TLS and SASL configure the connection to Brokers.
	TLS  kafka.TLS
	SASL kafka.SASL

	// StateDir holds the job's local state (and the embedded broker's
	// data). Default: <os.TempDir()>/samsa/<job>.
	StateDir string
	// EmbeddedListen is where the embedded broker listens. Default:
	// embedded.DefaultListen (127.0.0.1:9092).
	EmbeddedListen string

	// Processing is the delivery guarantee. Default: AtLeastOnce.
	Processing Guarantee
	// TransactionalID names this instance's transactional producer under
	// ExactlyOnce. It must be unique among the running instances of the
	// job and stable across restarts of one instance: a restarted
	// instance then aborts the transaction its predecessor left open at
	// once, instead of waiting for the transaction timeout. Default: the
	// job name, the host name and a hash of StateDir.
	TransactionalID string

	// CommitInterval is how often outputs are flushed and input offsets
	// committed (one transaction each, under ExactlyOnce). Under
	// at-least-once a crash re-processes about this much input, plus the
	// batch in progress (up to 10,000 records): the interval is checked
	// between batches. Under exactly-once it bounds how long outputs
	// stay invisible to read_committed readers.
	// Default: 5s, or 100ms under ExactlyOnce.
	CommitInterval time.Duration
	// StandbyReplicas is how many other instances keep a standby copy of
	// each task's Pebble stores up to date, from its changelogs, so that
	// when the task moves to one of them it restores only a short tail.
	// Standbys read only what their task's owner has committed. At most
	// the number of other instances. Default: 0.
	StandbyReplicas int
	// UntilEnd makes Run return once the input offsets it owns reach the
	// end offsets seen when it started, after a final commit.
	UntilEnd bool
	// OnDeserializeError and OnProcessError override the job's policies
	// for input records that fail to deserialize and records whose
	// processing fails (see stream.ErrorPolicy): stream.PolicyFail,
	// PolicySkip or PolicyDeadLetter. Default: the job's own, which is
	// PolicyFail unless it sets one.
	OnDeserializeError stream.ErrorPolicy
	OnProcessError     stream.ErrorPolicy
	// OnDropped overrides the job's policy for input records operators
	// drop on purpose, such as records too late for their window (see
	// stream.Job.OnDropped): stream.PolicySkip, which counts and logs
	// them, or PolicyDeadLetter, which also writes them to the
	// dead-letter topic. Default: the job's own, PolicySkip unless it sets
	// one.
	OnDropped stream.ErrorPolicy
	// Threads bounds how many tasks process records at once. Default:
	// GOMAXPROCS.
	Threads int
	// SessionTimeout is the consumer-group session timeout: how long the
	// group waits for a silent member before giving its tasks away.
	// Default: 45s.
	SessionTimeout time.Duration
	// ConnectTimeout bounds the start-up check that the brokers are
	// reachable and accept our credentials. Default: 15s.
	ConnectTimeout time.Duration
	// ShutdownTimeout bounds a shutdown: from the moment Run's context
	// ends (or the job stops on an error), how long the runner waits for
	// the brokers to take its last outputs and commit. Past it, as when
	// the brokers are down, it stops without that commit and returns an
	// error; the next run processes the uncommitted input again.
	// Default: 30s.
	ShutdownTimeout time.Duration

	// CacheBytes bounds the record caches of the instance's stores,
	// shared evenly by its tasks. Default: 64 MiB.
	CacheBytes int64
	// BlockCacheBytes is the size of the Pebble block cache shared by the
	// instance's tasks. Default: 64 MiB.
	BlockCacheBytes int64
	// MemTableSize is the size of each task's Pebble memtable. Default:
	// 16 MiB.
	MemTableSize uint64

	// HTTPAddr, if set, is where the runner serves its HTTP endpoint:
	// Prometheus metrics at /metrics, /healthz, /readyz, a JSON view of
	// its tasks at /status and store reads at /state/{store}. Give a
	// loopback address (127.0.0.1:PORT) unless other machines must reach
	// it. An address without a host (":9100") is on loopback too: only
	// an explicit host, such as 0.0.0.0:9100, opens the endpoint to other
	// machines. Default: off.
	HTTPAddr string

	// TaskHeader stamps every record the job writes to its output and
	// repartition topics with the header stream.TaskHeader ("samsa-task")
	// naming the task that wrote it, such as "0_3". It tells, for each
	// output record, which task (partition of which sub-topology)
	// produced it: what runs over the same input are compared by, task
	// by task, and a help when tracing a record back. Default: off, so
	// that outputs carry only the headers the job gives them.
	TaskHeader bool

	// Logger receives the runner's logs. Default: hclog's default logger
	// named after the job.
	Logger hclog.Logger
}

// Guarantee is a processing guarantee.
type Guarantee string

const (
	// AtLeastOnce commits input offsets after the outputs and changelog
	// writes they caused are acknowledged: a crash may repeat outputs
	// (never state: see the README), never lose them.
	AtLeastOnce Guarantee = "at-least-once"
	// ExactlyOnce writes outputs, changelog records and input offsets in
	// one Kafka transaction per commit interval: each input record
	// affects outputs and state exactly once, for readers that read
	// committed records only (isolation.level=read_committed).
	ExactlyOnce Guarantee = "exactly-once"
)

// defaultTransactionalID derives an instance's transactional ID from what
// tells instances apart and stays put across its restarts: the host and
// the state directory (which one running instance holds locked).
func defaultTransactionalID(job, stateDir string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs
	}
	h := fnv.New32a()
	h.Write([]byte(stateDir))
	return fmt.Sprintf("%s-%s-%08x", job, host, h.Sum32())
}

// EnsureDefaults fills in the defaults of unset fields.
func (c *Config) EnsureDefaults(job string) {
	if c.StateDir == "" {
		c.StateDir = filepath.Join(os.TempDir(), "samsa", job)
	}
	if c.EmbeddedListen == "" {
		c.EmbeddedListen = embedded.DefaultListen
	}
	if c.Processing == "" {
		c.Processing = AtLeastOnce
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 5 * time.Second
		if c.Processing == ExactlyOnce {
			c.CommitInterval = 100 * time.Millisecond
		}
	}
	if c.TransactionalID == "" && c.Processing == ExactlyOnce {
		c.TransactionalID = defaultTransactionalID(job, c.StateDir)
	}
	if c.Threads == 0 {
		c.Threads = runtime.GOMAXPROCS(0)
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 45 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 15 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 64 << 20
	}
	if c.BlockCacheBytes == 0 {
		c.BlockCacheBytes = 64 << 20
	}
	if c.MemTableSize == 0 {
		c.MemTableSize = 16 << 20
	}
	if c.Logger == nil {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: job})
	}
}

// Validate reports the first unusable setting.
func (c *Config) Validate() error {
	switch {
	case c.Processing != AtLeastOnce && c.Processing != ExactlyOnce:
		return fmt.Errorf("runner: processing %q: want %q or %q", c.Processing, AtLeastOnce, ExactlyOnce)
	case c.CommitInterval < 0: // zero is the default
		return fmt.Errorf("runner: commit interval %s: must be positive", c.CommitInterval)
	case c.OnDeserializeError != "" && !validPolicy(c.OnDeserializeError):
		return fmt.Errorf("runner: on-deserialize-error %q: want fail, skip or dlq", c.OnDeserializeError)
	case c.OnProcessError != "" && !validPolicy(c.OnProcessError):
		return fmt.Errorf("runner: on-process-error %q: want fail, skip or dlq", c.OnProcessError)
	case c.OnDropped != "" && c.OnDropped != stream.PolicySkip && c.OnDropped != stream.PolicyDeadLetter:
		return fmt.Errorf("runner: on-dropped %q: want skip or dlq", c.OnDropped)
	case c.StandbyReplicas < 0:
		return fmt.Errorf("runner: standby replicas %d: must not be negative", c.StandbyReplicas)
	case c.Threads < 1:
		return fmt.Errorf("runner: threads %d: must be at least 1", c.Threads)
	case c.SessionTimeout <= 0:
		return fmt.Errorf("runner: session timeout %s: must be positive", c.SessionTimeout)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("runner: connect timeout %s: must be positive", c.ConnectTimeout)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("runner: shutdown timeout %s: must be positive", c.ShutdownTimeout)
	case c.CacheBytes < 0:
		return fmt.Errorf("runner: cache bytes %d: must not be negative", c.CacheBytes)
	case c.BlockCacheBytes < 1<<20:
		return fmt.Errorf("runner: block cache bytes %d: want at least 1 MiB", c.BlockCacheBytes)
	case c.MemTableSize < 1<<20:
		return fmt.Errorf("runner: memtable size %d: want at least 1 MiB", c.MemTableSize)
	}
	return nil
}

// flagSet is a flag.FlagSet whose flags can also come from SAMSA_*
// environment variables, and whose help names them.
type flagSet struct {
	fs    *flag.FlagSet
	specs []flagSpec
}

type flagSpec struct {
	name, env, usage string
	secret           bool // never print its value
}

func newFlagSet(cmd string) *flagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by the caller, in one line
	return &flagSet{fs: fs}
}

func envName(flag string) string {
	return "SAMSA_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func (f *flagSet) add(name, usage string, secret bool) {
	f.specs = append(f.specs, flagSpec{name: name, env: envName(name), usage: usage, secret: secret})
}

func (f *flagSet) String(p *string, name, def, usage string) {
	f.fs.StringVar(p, name, def, usage)
	f.add(name, usage, false)
}

func (f *flagSet) Secret(p *string, name, usage string) {
	f.fs.StringVar(p, name, "", usage)
	f.add(name, usage, true)
}

func (f *flagSet) Bool(p *bool, name string, def bool, usage string) {
	f.fs.BoolVar(p, name, def, usage)
	f.add(name, usage, false)
}

func (f *flagSet) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	f.fs.DurationVar(p, name, def, usage)
	f.add(name, usage, false)
}

func (f *flagSet) Int64(p *int64, name string, def int64, usage string) {
	f.fs.Int64Var(p, name, def, usage)
	f.add(name, usage, false)
}

func (f *flagSet) Uint64(p *uint64, name string, def uint64, usage string) {
	f.fs.Uint64Var(p, name, def, usage)
	f.add(name, usage, false)
}

// Var adds a flag of any flag.Value, such as a repeatable one.
func (f *flagSet) Var(v flag.Value, name, usage string) {
	f.fs.Var(v, name, usage)
	f.add(name, usage, false)
}

func (f *flagSet) Int(p *int, name string, def int, usage string) {
	f.fs.IntVar(p, name, def, usage)
	f.add(name, usage, false)
}

// parse parses args, then applies the environment to every flag not given
// on the command line. Errors name the flag or variable and the value.
func (f *flagSet) parse(args []string, env func(string) string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		// The flag package names flags with one dash; our help uses two.
		msg := strings.NewReplacer("flag -", "flag --", "defined: -", "defined: --").Replace(err.Error())
		return fmt.Errorf("%s: %s", f.fs.Name(), msg)
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for _, s := range f.specs {
		v := env(s.env)
		if set[s.name] || v == "" {
			continue
		}
		if err := f.fs.Set(s.name, v); err != nil {
			shown := strconv.Quote(v)
			if s.secret {
				shown = "(hidden)"
			}
			return fmt.Errorf("%s: environment %s=%s: %v", f.fs.Name(), s.env, shown, err)
		}
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", f.fs.Name(), f.fs.Arg(0))
	}
	return nil
}

// usage writes the help of every flag: name, default, environment
// variable, and what it does.
func (f *flagSet) usage(w io.Writer) {
	for _, s := range f.specs {
		fl := f.fs.Lookup(s.name)
		typ, usage := flag.UnquoteUsage(fl)
		head := "  --" + s.name
		if typ != "" {
			head += " " + typ
		}
		fmt.Fprintf(w, "%s\n      %s\n      env %s", head, usage, s.env)
		switch {
		case s.secret:
			fmt.Fprint(w, "; no default, never printed")
		case fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "0s": // a zero duration: the usage says
			fmt.Fprintf(w, "; default %s", fl.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// brokerFlags are the flags that say how to reach the brokers, shared by
// every command that talks to them.
type brokerFlags struct {
	brokers      string
	tls          kafka.TLS
	sasl         kafka.SASL
	saslPassFile string
}

func (b *brokerFlags) register(f *flagSet) {
	f.String(&b.brokers, "brokers", "", "Kafka brokers, comma-separated host:port; empty starts an embedded broker")
	f.Bool(&b.tls.Enable, "tls", false, "connect to the brokers with TLS")
	f.String(&b.tls.CAFile, "tls-ca", "", "`file` of PEM CA certificates to verify the brokers with (implies --tls)")
	f.String(&b.tls.CertFile, "tls-cert", "", "`file` with the PEM client certificate, for mutual TLS (implies --tls)")
	f.String(&b.tls.KeyFile, "tls-key", "", "`file` with the PEM client key, for mutual TLS (implies --tls)")
	f.String(&b.tls.ServerName, "tls-server-name", "", "`name` to verify in the brokers' certificates, overriding the host dialed")
	f.Bool(&b.tls.InsecureSkipVerify, "tls-insecure-skip-verify", false, "do not verify the brokers' certificates (testing only)")
	f.String(&b.sasl.Mechanism, "sasl-mechanism", "", "SASL `mechanism`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none")
	f.String(&b.sasl.User, "sasl-user", "", "SASL `user`")
	f.Secret(&b.sasl.Password, "sasl-password", "SASL `password`; prefer the environment or --sasl-password-file")
	f.String(&b.saslPassFile, "sasl-password-file", "", "`file` holding the SASL password")
}

// resolve checks the broker flags and fills cfg's fields from them.
func (b *brokerFlags) resolve(cfg *Config) error {
	if b.brokers != "" {
		for _, s := range strings.Split(b.brokers, ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.Brokers = append(cfg.Brokers, s)
			}
		}
	}
	cfg.TLS = b.tls
	cfg.SASL = b.sasl
	if b.saslPassFile != "" {
		if b.sasl.Password != "" {
			return errors.New("flags --sasl-password and --sasl-password-file: give one, not both")
		}
		pw, err := os.ReadFile(b.saslPassFile)
		if err != nil {
			return fmt.Errorf("flag --sasl-password-file: %w", err)
		}
		cfg.SASL.Password = strings.TrimRight(string(pw), "\r\n")
	}
	if cfg.SASL.Mechanism != "" && cfg.SASL.User == "" {
		return errors.New("flag --sasl-mechanism: needs --sasl-user")
	}
	if cfg.SASL.Mechanism == "" && cfg.SASL.User != "" {
		return errors.New("flag --sasl-user: needs --sasl-mechanism")
	}
	return nil
}
