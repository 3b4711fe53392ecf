// Command chaos runs a stateful samsa job through faults and checks that
// it loses nothing and that its state comes out exact:
//
//	go run ./bench/chaos [--processing exactly-once|at-least-once] [--records 1000000]
//	    [--seed N] [--instances 3] [--kills 5] [--broker-restarts 2] [--rebalances 4]
//	    [--keys 1000] [--partitions 6] [--rate 20000] [--timeout 20m] [--keep]
//
// It builds cmd/samsa and the count job of the runner's tests
// (runner/testdata/statejob: a count per key of topic "in", each new count
// written to "out", the store's changelog "statejob-counts-changelog"),
// starts `samsa broker` as a child process with a data directory, and
// runs --instances instances of the job as child processes, each with a
// state directory of its own. A producer writes --records records (keys
// drawn from --keys keys, each value a unique record number) at about
// --rate records/s. Meanwhile, at moments drawn from --seed (printed, so a
// run can be repeated), it
//
//   - SIGKILLs an instance and starts it again on the same state directory
//     (--kills times);
//   - SIGKILLs the broker and starts it again on the same address and data
//     directory (--broker-restarts times): the instances and the producer
//     outwait it;
//   - adds an instance with an empty state directory, or stops one with
//     SIGTERM (--rebalances times, alternately): the group rebalances and
//     tasks move, restoring from their changelogs.
//
// Then it waits until the group has committed all of the input, stops the
// instances, and checks, against the input the broker holds:
//
//   - duplicates: outputs that repeat a count of a key already written;
//   - lost: counts of a key from 1 to its number of input records that no
//     output carries, and outputs beyond it (a record counted twice);
//   - final state: the latest changelog record of every key, and its last
//     output, equal its number of input records;
//   - input: every record the producer had acknowledged is in the input.
//
// Outputs and changelog are read read_committed. Under exactly-once any
// duplicate is an anomaly; under at-least-once duplicates are counted, not
// refused. The command prints a table of the figures and exits 1 on any
// anomaly, 2 on bad flags. The work directory (logs of every process,
// state directories, the broker's data) is kept on an anomaly or with
// --keep, and removed otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const (
	exactlyOnce  = "exactly-once"
	atLeastOnce  = "at-least-once"
	inputTopic   = "in"
	outputTopic  = "out"
	jobName      = "statejob"
	changelog    = "statejob-counts-changelog"
	exitAnomaly  = 1
	exitBadUsage = 2
)

// config is a run's parameters.
type config struct {
	processing     string
	records        int64
	seed           uint64
	instances      int
	kills          int
	brokerRestarts int
	rebalances     int
	keys           int
	partitions     int
	rate           int
	timeout        time.Duration
	sessionTimeout time.Duration
	commitInterval time.Duration // zero: the job's default for the processing guarantee
	keep           bool
	workDir        string // empty: a new temporary directory
	samsaBin       string // empty: build cmd/samsa
	jobBin         string // empty: build the count job
	race           bool   // build the binaries with the race detector
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// parse reads the command line.
func parse(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.processing, "processing", exactlyOnce, "the job's processing guarantee: exactly-once or at-least-once")
	fs.Int64Var(&cfg.records, "records", 1_000_000, "input records to produce over the run")
	fs.Uint64Var(&cfg.seed, "seed", 0, "seed of the fault schedule and the keys; 0 picks one from the clock (printed)")
	fs.IntVar(&cfg.instances, "instances", 3, "job instances running at the start")
	fs.IntVar(&cfg.kills, "kills", 5, "instance SIGKILLs, each followed by a restart on the same state directory")
	fs.IntVar(&cfg.brokerRestarts, "broker-restarts", 2, "broker SIGKILLs, each followed by a restart on the same data directory")
	fs.IntVar(&cfg.rebalances, "rebalances", 4, "instances added or stopped, alternately, each a rebalance of the group")
	fs.IntVar(&cfg.keys, "keys", 1000, "distinct keys of the input")
	fs.IntVar(&cfg.partitions, "partitions", 6, "partitions of the input and output topics")
	fs.IntVar(&cfg.rate, "rate", 20_000, "records/s the producer writes at, at most")
	fs.DurationVar(&cfg.timeout, "timeout", 20*time.Minute, "how long the job may take to commit all of the input after the last record is produced")
	fs.DurationVar(&cfg.sessionTimeout, "session-timeout", 2*time.Second, "the instances' --session-timeout: how soon a killed instance's tasks move")
	fs.DurationVar(&cfg.commitInterval, "commit-interval", 0, "the instances' --commit-interval; 0 keeps the job's default")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the work directory (logs, state, broker data) even when the run is clean")
	fs.StringVar(&cfg.workDir, "work-dir", "", "directory for the logs, state directories and the broker's data; default a new temporary one")
	fs.StringVar(&cfg.samsaBin, "samsa-bin", "", "a built cmd/samsa to run the broker with; default: build it")
	fs.StringVar(&cfg.jobBin, "job-bin", "", "a built runner/testdata/statejob to run as the job; default: build it")
	fs.BoolVar(&cfg.race, "race", false, "build the broker and the job with the race detector")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case cfg.processing != exactlyOnce && cfg.processing != atLeastOnce:
		return cfg, fmt.Errorf("flag --processing: %q is not exactly-once or at-least-once", cfg.processing)
	case cfg.records < 1:
		return cfg, fmt.Errorf("flag --records: %d is not positive", cfg.records)
	case cfg.instances < 1:
		return cfg, fmt.Errorf("flag --instances: %d; at least one instance must run", cfg.instances)
	case cfg.kills < 0, cfg.brokerRestarts < 0, cfg.rebalances < 0:
		return cfg, errors.New("flags --kills, --broker-restarts and --rebalances take counts of zero or more")
	case cfg.keys < 1:
		return cfg, fmt.Errorf("flag --keys: %d is not positive", cfg.keys)
	case cfg.partitions < 1:
		return cfg, fmt.Errorf("flag --partitions: %d is not positive", cfg.partitions)
	case cfg.rate < 1:
		return cfg, fmt.Errorf("flag --rate: %d is not positive", cfg.rate)
	case cfg.sessionTimeout <= 0:
		return cfg, fmt.Errorf("flag --session-timeout: %s is not positive", cfg.sessionTimeout)
	}
	if cfg.seed == 0 {
		cfg.seed = uint64(time.Now().UnixNano())
	}
	return cfg, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "chaos: %v (see chaos -h)\n", err)
		return exitBadUsage
	}
	res, err := chaos(ctx, cfg, stdout)
	if res != nil {
		res.print(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "chaos: %v\n", err)
		return exitAnomaly
	}
	if len(res.anomalies) > 0 {
		return exitAnomaly
	}
	return 0
}
