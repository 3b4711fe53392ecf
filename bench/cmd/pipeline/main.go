// Command pipeline compares a samsa job with the franz-go loop a competent
// user would write by hand for the same work, on the same broker, over the
// same input:
//
//	go run ./bench/cmd/pipeline [--workload map] [--records 1000000] [--value-size 100] [--keys 10000]
//	    [--partitions 4] [--runs 5] [--commit-interval 5s] [--samsa-threads 0]
//	    [--brokers host:port | --broker-bin path] [--variants baseline,samsa]
//	    [--cpuprofile dir]
//
// Without --brokers it builds cmd/samsa and runs `samsa broker` as a child
// process with a fresh data directory. It creates an input topic, seeds it
// once with --records records (values of --value-size lower-case letters,
// keys "key-0" to "key-<keys-1>", partitioned by key), then runs each
// variant --runs times, alternating which goes first:
//
//   - baseline: a hand-written kgo consume→map→produce loop with
//     at-least-once commits (see baseline.go);
//   - samsa: the same map as a samsa job, Input → MapValues → Output, run by
//     runner.Runner with UntilEnd (see samsa.go);
//   - consume: the baseline's loop without the map and the produce, to show
//     what the broker delivers to a reader alone. Not run by default.
//
// The map upper-cases each value into a new slice (bench.Upper). That is
// the default workload, "map"; --workload picks a stateful one instead,
// each with a baseline and a samsa variant (see stateful.go):
//
//   - count: a count per key, each new count written out (8-byte
//     big-endian); the baseline counts in a Go map, samsa runs
//     operators.Count in a Pebble store with a changelog;
//   - wordcount: the input is lines of words; the baseline splits and
//     counts them in a map, samsa runs the word-count example's job, whose
//     GroupBy goes through a repartition topic;
//   - join: the harness also seeds a table topic with one record per key,
//     partitioned like the input; each input record is written out with
//     its key's table value appended. The baseline reads the table into a
//     map before its loop; samsa runs stream.TableInput and
//     operators.JoinTable (see join.go);
//   - restore: the harness runs the samsa count job once; then the
//     baseline reads its changelog topic with a plain consumer, and samsa
//     runs the job again in its group with an empty state directory,
//     restoring the stores from the changelog (timed from the runner's
//     "restored tasks" logs).
//
// For count and wordcount the harness also checks that the last count of
// every key adds up to the input's records (or words); for join, that
// every output record carries its key's table value.
//
// Each run of a variant is a child process of this command (the command
// re-executed with the run's spec in the environment), with a fresh
// consumer group and a fresh output topic; it consumes the input to the
// end offsets seen at its start and returns after its final flush and
// commit. Its records/s are the input records over the time from its
// first record to its return; start-up and the group join are not
// counted. Its CPU time is the child's rusage. The broker's CPU time over
// each child's life is read from /proc (Linux only), so one can tell
// whether the broker, rather than the client, is the bottleneck. After
// each run the command checks that the output holds exactly one record
// per input record (per word, for wordcount) and that the group committed
// the input's end offsets, then deletes the output topic, the job's
// internal topics and the group.
//
// Peak RSS is the child's VmHWM on Linux, its rusage elsewhere on
// Unix-like systems (where it may include this process's memory: the child
// starts as a vfork of it), and is not reported on other systems; the
// broker's CPU per run comes from /proc, so it is reported on Linux only,
// and only for a broker this command started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(childMain(spec))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pipeline: %v\n", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "pipeline: %v\n", err)
		stop()
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	workload       string
	records        int
	valueSize      int
	keys           int
	partitions     int
	runs           int
	commitInterval time.Duration
	samsaThreads   int
	brokers        []string
	brokerBin      string
	variants       []string
	cpuProfileDir  string
}

// parseFlags parses and checks the command line. Help goes to stderr.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var (
		cfg         config
		brokers     string
		variantList string
	)
	fs := flag.NewFlagSet("pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.workload, "workload", "map", "what to compare: map, count, wordcount, windowed, join or restore")
	fs.IntVar(&cfg.records, "records", 1_000_000, "records to seed the input with")
	fs.IntVar(&cfg.valueSize, "value-size", 100, "bytes of each record's value")
	fs.IntVar(&cfg.keys, "keys", 10_000, "distinct keys")
	fs.IntVar(&cfg.partitions, "partitions", 4, "partitions of the input and output topics")
	fs.IntVar(&cfg.runs, "runs", 5, "runs of each variant")
	fs.DurationVar(&cfg.commitInterval, "commit-interval", 5*time.Second, "how often every variant flushes its outputs and commits its offsets")
	fs.IntVar(&cfg.samsaThreads, "samsa-threads", 0, "runner.Config.Threads of the samsa variant; 0 keeps the runner's default (GOMAXPROCS)")
	fs.StringVar(&brokers, "brokers", "", "comma-separated `host:port` addresses of running brokers to use instead of starting `samsa broker`")
	fs.StringVar(&cfg.brokerBin, "broker-bin", "", "samsa `binary` to run the broker with; empty builds ./cmd/samsa with the go command")
	fs.StringVar(&variantList, "variants", "baseline,samsa", "comma-separated variants to run: baseline, samsa, and consume for the map workload")
	fs.StringVar(&cfg.cpuProfileDir, "cpuprofile", "", "`dir`ectory to write a CPU profile of each run to, as <variant>-<run>.pprof")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"records", cfg.records}, {"value-size", cfg.valueSize}, {"keys", cfg.keys}, {"partitions", cfg.partitions}, {"runs", cfg.runs}} {
		if f.v < 1 {
			return config{}, fmt.Errorf("flag --%s: %d: must be at least 1", f.name, f.v)
		}
	}
	if cfg.samsaThreads < 0 {
		return config{}, fmt.Errorf("flag --samsa-threads: %d: must not be negative", cfg.samsaThreads)
	}
	if cfg.commitInterval <= 0 {
		return config{}, fmt.Errorf("flag --commit-interval: %s: must be positive", cfg.commitInterval)
	}
	cfg.brokers = splitList(brokers)
	cfg.variants = splitList(variantList)
	if len(cfg.variants) == 0 {
		return config{}, errors.New("flag --variants: no variant given")
	}
	work, ok := workloads[cfg.workload]
	if !ok {
		return config{}, fmt.Errorf("flag --workload: unknown workload %q (want map, count, wordcount, windowed, join or restore)", cfg.workload)
	}
	for _, v := range cfg.variants {
		if _, ok := work.variants[v]; !ok {
			return config{}, fmt.Errorf("flag --variants: workload %s has no variant %q (want one of %s)",
				cfg.workload, v, strings.Join(slices.Sorted(maps.Keys(work.variants)), ", "))
		}
	}
	return cfg, nil
}

// splitList returns the non-empty elements of a comma-separated list.
func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
