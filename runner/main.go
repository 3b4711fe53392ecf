package runner

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/samsa-go/samsa/connectors/embedded"
	"github.com/samsa-go/samsa/stream"
)

// Option configures the command line built by [Main].
type Option func(*cli)

// WithDemo adds `run --demo` to the job binary: it seeds the job's input
// with sample records, runs the job to the end of them, and prints what
// the job wrote. Without --brokers the demo runs on a fresh embedded
// broker, so it gives the same output every time.
func WithDemo(d Demo) Option { return func(c *cli) { c.demo = &d } }

type cli struct {
	job    *stream.Job
	demo   *Demo
	stdout io.Writer
	stderr io.Writer
	env    func(string) string
}

// Main is the command line of a job binary. It runs the command named by
// os.Args and exits: 0 on success, 1 if the command failed, 2 on a usage
// error. Commands:
//
//	run            process the job's input (the default)
//	describe       print the job's topology: text, Mermaid or Graphviz DOT
//	status         show the job's instances, their tasks, lag and commits
//	replay         move a stopped job's input offsets, resetting its state
//	state          read a store: state get STORE KEY, state scan STORE [PREFIX]
//	create-topics  create the job's missing input and output topics
//
// Every flag can also be set from the environment: --commit-interval from
// SAMSA_COMMIT_INTERVAL, and so on. `<binary> help` lists them all.
func Main(job *stream.Job, opts ...Option) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Command(ctx, job, os.Args[1:], os.Stdout, os.Stderr, opts...)
	stop()
	os.Exit(code)
}

// Command is [Main] without the process: it runs one command line and
// returns the exit code. Cancelling ctx shuts a running job down cleanly.
func Command(ctx context.Context, job *stream.Job, args []string, stdout, stderr io.Writer, opts ...Option) int {
	c := &cli{job: job, stdout: stdout, stderr: stderr, env: os.Getenv}
	for _, o := range opts {
		o(c)
	}
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = c.run(ctx, args)
	case "describe":
		err = c.describeJob(ctx, args)
	case "create-topics":
		err = c.createTopics(ctx, args)
	case "replay":
		err = c.replay(ctx, args)
	case "status":
		err = c.status(ctx, args)
	case "state":
		err = c.stateCmd(ctx, args)
	case "help", "-h", "--help":
		c.help()
		return 0
	default:
		fmt.Fprintf(stderr, "%s: unknown command %q (commands: run, describe, status, replay, state, create-topics, help)\n", job.Name(), cmd)
		return 2
	}
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		c.help()
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s: %v (see %s help)\n", job.Name(), usage.error, filepath.Base(os.Args[0]))
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", job.Name(), err)
		return 1
	}
}

// usageError marks an error in the command line.
type usageError struct{ error }

// runFlags are the flags of `run`.
type runFlags struct {
	brokerFlags
	cfg      Config
	listen   string
	logLevel string
	logJSON  bool
	demo     bool
}

func (c *cli) runFlagSet(cmd string) (*flagSet, *runFlags) {
	f := newFlagSet(cmd)
	rf := &runFlags{}
	rf.brokerFlags.register(f)
	f.String(&rf.listen, "embedded-listen", embedded.DefaultListen, "`host:port` for the embedded broker started when --brokers is empty")
	f.String(&rf.cfg.StateDir, "state-dir", filepath.Join(os.TempDir(), "samsa", c.job.Name()), "`dir`ectory for local state and the embedded broker's data")
	f.String((*string)(&rf.cfg.Processing), "processing", string(AtLeastOnce), "delivery guarantee: at-least-once or exactly-once (outputs, state and offsets in one transaction per commit; readers must use read_committed)")
	f.Duration(&rf.cfg.CommitInterval, "commit-interval", 0, "how often to flush outputs and commit input offsets; a crash re-processes at most about this much input (default 5s, 100ms under exactly-once)")
	f.String(&rf.cfg.TransactionalID, "transactional-id", "", "transactional `id` of this instance under exactly-once: unique per running instance, stable across its restarts (default: job, host name and a hash of --state-dir)")
	f.Bool(&rf.cfg.UntilEnd, "until-end", false, "process up to the end offsets seen at start, commit, and exit")
	f.String((*string)(&rf.cfg.OnDeserializeError), "on-deserialize-error", "", "`policy` for an input record whose key, value or timestamp does not decode: fail (stop at it), skip, or dlq (write it to <job>-dlq); default: the job's, fail unless it sets one")
	f.String((*string)(&rf.cfg.OnProcessError), "on-process-error", "", "`policy` for a record whose processing returns an error or panics: fail, skip or dlq, as above")
	f.String((*string)(&rf.cfg.OnDropped), "on-dropped", "", "`policy` for an input record an operator drops on purpose, such as one too late for its window: skip (count and log it) or dlq (also write it to <job>-dlq); default: the job's, skip unless it sets one")
	f.Int(&rf.cfg.Threads, "threads", defaultConfig.Threads, "how many tasks may process records at once")
	f.Int(&rf.cfg.StandbyReplicas, "standby-replicas", 0, "how many other instances keep a warm copy of each task's stores, so that a task moving to one restores only a short tail")
	f.Duration(&rf.cfg.SessionTimeout, "session-timeout", defaultConfig.SessionTimeout, "consumer-group session timeout: how long before a silent instance's tasks move")
	f.Duration(&rf.cfg.ConnectTimeout, "connect-timeout", defaultConfig.ConnectTimeout, "how long to wait for the brokers at start")
	f.Duration(&rf.cfg.ShutdownTimeout, "shutdown-timeout", defaultConfig.ShutdownTimeout, "how long a stop waits for the brokers to take the last outputs and commit; past it the uncommitted input is processed again by the next run")
	f.Int64(&rf.cfg.CacheBytes, "cache-bytes", defaultConfig.CacheBytes, "`bytes` of store record cache per instance, shared by its tasks")
	f.Int64(&rf.cfg.BlockCacheBytes, "block-cache-bytes", defaultConfig.BlockCacheBytes, "`bytes` of Pebble block cache per instance")
	f.Uint64(&rf.cfg.MemTableSize, "memtable-bytes", defaultConfig.MemTableSize, "`bytes` of each task's Pebble memtable")
	f.String(&rf.cfg.HTTPAddr, "http-addr", "", "`host:port` to serve /metrics, /healthz, /readyz, /status and /state on (a host-less :PORT means loopback; 0.0.0.0:PORT opens it to other machines); empty for none")
	f.Bool(&rf.cfg.TaskHeader, "task-header", false, "stamp each output record with the header samsa-task naming the task that wrote it")
	f.String(&rf.logLevel, "log-level", "info", "log `level`: trace, debug, info, warn or error")
	f.Bool(&rf.logJSON, "log-json", false, "log in JSON")
	if c.demo != nil {
		f.Bool(&rf.demo, "demo", false, "seed sample input, run to its end and print the output (a fresh embedded broker unless --brokers)")
	}
	return f, rf
}

var defaultConfig = func() Config {
	var c Config
	c.EnsureDefaults("job")
	return c
}()

func (c *cli) parseRun(args []string) (*runFlags, error) {
	f, rf := c.runFlagSet("run")
	if err := f.parse(args, c.env); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if err := rf.brokerFlags.resolve(&rf.cfg); err != nil {
		return nil, usageError{err}
	}
	level := hclog.LevelFromString(rf.logLevel)
	if level == hclog.NoLevel {
		return nil, usageError{fmt.Errorf("flag --log-level: %q is not one of trace, debug, info, warn, error", rf.logLevel)}
	}
	rf.cfg.Logger = hclog.New(&hclog.LoggerOptions{
		Name: c.job.Name(), Level: level, JSONFormat: rf.logJSON, Output: c.stderr,
	})
	rf.cfg.EmbeddedListen = rf.listen
	if err := rf.cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	return rf, nil
}

func (c *cli) run(ctx context.Context, args []string) error {
	rf, err := c.parseRun(args)
	if err != nil {
		return err
	}
	cfg := rf.cfg
	if rf.demo {
		return c.runDemo(ctx, cfg)
	}
	stop, err := brokersOrEmbedded(&cfg)
	if err != nil {
		return err
	}
	defer stop()
	r, err := New(c.job, cfg)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// brokersOrEmbedded starts the embedded broker, with its data under the
// state directory, if cfg names no brokers, and points cfg at it. The
// returned function stops it.
func brokersOrEmbedded(cfg *Config) (stop func(), err error) {
	if len(cfg.Brokers) > 0 {
		return func() {}, nil
	}
	b, err := startEmbedded(*cfg, filepath.Join(cfg.StateDir, "broker"))
	if err != nil {
		return nil, err
	}
	cfg.Brokers = []string{b.Addr()}
	return b.Close, nil
}

// startEmbedded starts the embedded broker with its data in dataDir,
// listening at cfg.EmbeddedListen.
//
// With SASL flags (--sasl-mechanism, --sasl-user and a password), the
// broker requires SASL, with that user as its one user: other instances
// and clients connect with the same credentials.
func startEmbedded(cfg Config, dataDir string) (*embedded.Broker, error) {
	ec := embedded.Config{
		DataDir: dataDir,
		Listen:  cfg.EmbeddedListen,
		Logger:  cfg.Logger.Named("broker"),
	}
	if cfg.SASL.Mechanism != "" {
		ec.SASL = []embedded.User{{Mechanism: cfg.SASL.Mechanism, Name: cfg.SASL.User, Password: cfg.SASL.Password}}
	}
	b, err := embedded.Start(ec)
	if err != nil {
		return nil, err
	}
	msg, kv := "embedded broker started; other instances and clients can use it with --brokers "+b.Addr(), []any{"addr", b.Addr(), "data_dir", dataDir}
	if cfg.SASL.Mechanism != "" {
		msg += " and the same SASL flags"
		kv = append(kv, "sasl_mechanism", cfg.SASL.Mechanism, "sasl_user", cfg.SASL.User)
	}
	cfg.Logger.Info(msg, kv...)
	return b, nil
}

func (c *cli) help() {
	w := c.stdout
	name := filepath.Base(os.Args[0])
	fmt.Fprintf(w, "%s: the samsa job %q\n\nUsage:\n  %s [command] [flags]\n\nCommands:\n", name, c.job.Name(), name)
	fmt.Fprintln(w, "  run            process the job's input (the default command)")
	fmt.Fprintln(w, "  describe       print the job's topology: --format text, mermaid or dot")
	fmt.Fprintln(w, "  status         show the job's instances, the tasks each holds, lag and commit age")
	fmt.Fprintln(w, "  replay         move a stopped job's input offsets --from earliest, latest, an offset or a time,")
	fmt.Fprintln(w, "                 resetting its state unless --keep-state; --dry-run prints the plan")
	fmt.Fprintln(w, "  state          read a store: state get STORE KEY, state scan STORE [PREFIX]")
	fmt.Fprintln(w, "  create-topics  create the job's missing input and output topics")
	fmt.Fprintln(w, "  help           this help")
	fmt.Fprintln(w, "\nFlags of run (each also read from the environment variable named with it):")
	f, _ := c.runFlagSet("run")
	f.usage(w)
	seen := map[string]bool{}
	for _, s := range f.specs {
		seen[s.name] = true
	}
	fmt.Fprintln(w, "\nFlags of create-topics: the broker flags, --embedded-listen and --state-dir above, and:")
	f, _, _ = c.topicsFlagSet()
	f.usageExcept(w, seen)
	fmt.Fprintln(w, "\nFlags of describe, status and replay: the broker flags, --embedded-listen, --state-dir and")
	fmt.Fprintln(w, "--connect-timeout above (without --brokers they use the embedded broker listening at")
	fmt.Fprintln(w, "--embedded-listen, or replay and status start one on the data under --state-dir), and:")
	f, _, _ = c.describeFlagSet()
	f.usageExcept(w, seen)
	f, _, _ = c.replayFlagSet()
	f.usageExcept(w, seen)
	fmt.Fprintln(w, "\nFlags of state: --state-dir and --http-addr above (the instance to read from), and:")
	f, _ = c.stateFlagSet()
	f.usageExcept(w, seen)
}
