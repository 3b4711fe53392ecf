package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/bench"
)

// seedValues is how many distinct values the input cycles through.
const seedValues = 1024

// harness is one invocation of the command: the broker, the seeded input,
// and the runs of the variants over it.
type harness struct {
	cfg     config
	w       io.Writer
	brokers []string
	broker  *broker // nil when given --brokers
	adm     *kadm.Client

	prefix    string // of every topic and group this invocation creates
	input     string
	inputEnds kadm.ListedOffsets
}

// run is the command: it starts the broker (or joins the one given),
// seeds the input, runs the variants and prints what it measured to w.
func run(ctx context.Context, cfg config, w io.Writer) error {
	h := &harness{cfg: cfg, w: w, brokers: cfg.brokers}
	h.prefix = "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	h.input = h.prefix + "-input"
	if cfg.cpuProfileDir != "" {
		if err := os.MkdirAll(cfg.cpuProfileDir, 0o755); err != nil {
			return fmt.Errorf("flag --cpuprofile: %w", err)
		}
	}
	fmt.Fprintf(w, "machine: %s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if load := loadAverage(); load != "" {
		fmt.Fprintf(w, ", load average %s", load)
	}
	fmt.Fprintln(w)
	if len(h.brokers) == 0 {
		b, err := startBroker(ctx, cfg.brokerBin)
		if err != nil {
			return err
		}
		defer b.stop()
		h.broker = b
		h.brokers = []string{b.addr}
		fmt.Fprintf(w, "broker: samsa broker (pid %d) at %s\n", b.cmd.Process.Pid, b.addr)
	} else {
		fmt.Fprintf(w, "broker: %s\n", strings.Join(h.brokers, ","))
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)))
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	h.adm = kadm.NewClient(cl)

	if err := h.createTopic(ctx, h.input); err != nil {
		return err
	}
	if h.broker == nil {
		// Ours goes away with its data directory; someone else's keeps
		// what we leave. Best effort: there is nothing to do on failure.
		defer h.deleteTopic(context.Background(), h.input)
	}
	if err := h.seed(ctx); err != nil {
		return err
	}

	fmt.Fprintf(w, "\neach run: %s records of %d-byte values over %d keys, %d partitions, commit interval %s\n\n",
		thousands(float64(cfg.records)), cfg.valueSize, cfg.keys, cfg.partitions, cfg.commitInterval)
	printHeader(w)
	var results []result
	for n := 1; n <= cfg.runs; n++ {
		order := slices.Clone(cfg.variants)
		if n%2 == 0 {
			slices.Reverse(order) // neither variant always runs first
		}
		for _, v := range order {
			res, err := h.runOnce(ctx, v, n)
			if err != nil {
				return err
			}
			printRow(w, res)
			results = append(results, res)
		}
	}
	printSummary(w, cfg.variants, results)
	if load := loadAverage(); load != "" {
		fmt.Fprintf(w, "machine: load average %s\n", load)
	}

	if h.broker != nil {
		if err := h.broker.stop(); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		cpu, peak := usage(h.broker.cmd.ProcessState)
		fmt.Fprintf(w, "broker: peak RSS %.0f MiB, CPU %.1fs in all\n", mib(peak), cpu.Seconds())
	}
	return nil
}

// createTopic creates topic with the configured partition count.
func (h *harness) createTopic(ctx context.Context, topic string) error {
	if _, err := h.adm.CreateTopic(ctx, int32(h.cfg.partitions), -1, nil, topic); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// deleteTopic deletes topic.
func (h *harness) deleteTopic(ctx context.Context, topic string) error {
	if _, err := h.adm.DeleteTopic(ctx, topic); err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	return nil
}

// seed writes the input: record i has key i mod keys and value i mod
// seedValues, and goes to the partition its key hashes to (murmur2, as
// with any Kafka producer). It notes the input's end offsets and prints
// how fast the broker took the records.
func (h *harness) seed(ctx context.Context) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(h.brokers...),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
		kgo.DefaultProduceTopic(h.input),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)
	if err != nil {
		return fmt.Errorf("seed: client: %w", err)
	}
	defer cl.Close()

	keys, values := bench.Keys(h.cfg.keys), bench.Values(seedValues, h.cfg.valueSize)
	var failed atomic.Pointer[error]
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			err = fmt.Errorf("seed: produce to %s/%d: %w", r.Topic, r.Partition, err)
			failed.CompareAndSwap(nil, &err)
		}
	}
	brokerBefore, brokerKnown := h.broker.cpu()
	start := time.Now()
	for i := range h.cfg.records {
		cl.Produce(ctx, &kgo.Record{Key: keys[i%len(keys)], Value: values[i%len(values)]}, promise)
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("seed: flush: %w", err)
	}
	elapsed := time.Since(start)
	brokerAfter, _ := h.broker.cpu()
	if err := failed.Load(); err != nil {
		return *err
	}

	h.inputEnds, err = h.adm.ListCommittedOffsets(ctx, h.input)
	if err == nil {
		err = h.inputEnds.Error()
	}
	if err != nil {
		return fmt.Errorf("seed: list end offsets of %s: %w", h.input, err)
	}
	var total int64
	h.inputEnds.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != int64(h.cfg.records) {
		return fmt.Errorf("seed: %s holds %d records, want %d", h.input, total, h.cfg.records)
	}
	fmt.Fprintf(h.w, "seed: %s records into %s in %.2fs, %s records/s produced",
		thousands(float64(h.cfg.records)), h.input, elapsed.Seconds(), thousands(float64(h.cfg.records)/elapsed.Seconds()))
	if brokerKnown {
		fmt.Fprintf(h.w, ", broker CPU %.2fs", (brokerAfter - brokerBefore).Seconds())
	}
	fmt.Fprintln(h.w)
	return nil
}

// runOnce runs a variant once, with a fresh group and output topic, checks
// what it did, and deletes the group and the topic.
func (h *harness) runOnce(ctx context.Context, variant string, n int) (result, error) {
	name := fmt.Sprintf("%s-%s-%d", h.prefix, variant, n)
	spec := childSpec{
		Variant:        variant,
		Brokers:        h.brokers,
		Input:          h.input,
		Group:          name,
		CommitInterval: h.cfg.commitInterval,
		Threads:        h.cfg.samsaThreads,
	}
	if h.cfg.cpuProfileDir != "" {
		spec.CPUProfile = filepath.Join(h.cfg.cpuProfileDir, fmt.Sprintf("%s-%d.pprof", variant, n))
	}
	if variants[variant].writes {
		spec.Output = name
		if err := h.createTopic(ctx, spec.Output); err != nil {
			return result{}, err
		}
	}

	res, err := runChild(ctx, spec, h.cfg.records, h.broker)
	res.run = n
	if err == nil {
		err = h.verify(ctx, spec)
	}
	if _, derr := h.adm.DeleteGroup(ctx, spec.Group); derr != nil {
		err = errors.Join(err, fmt.Errorf("delete group %s: %w", spec.Group, derr))
	}
	if spec.Output != "" {
		err = errors.Join(err, h.deleteTopic(ctx, spec.Output))
	}
	return res, err
}

// verify checks that a run did all its work: its group committed the
// input's end offsets, and its output, if it writes one, holds one record
// per input record.
func (h *harness) verify(ctx context.Context, spec childSpec) error {
	committed, err := h.adm.FetchOffsets(ctx, spec.Group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return fmt.Errorf("check %s: fetch its committed offsets: %w", spec.Group, err)
	}
	var problems []string
	h.inputEnds.Each(func(end kadm.ListedOffset) {
		if end.Offset == 0 {
			return
		}
		if c, ok := committed.Lookup(end.Topic, end.Partition); !ok || c.At != end.Offset {
			problems = append(problems, fmt.Sprintf("committed %s/%d@%d, want @%d", end.Topic, end.Partition, c.At, end.Offset))
		}
	})
	if spec.Output != "" {
		ends, err := h.adm.ListEndOffsets(ctx, spec.Output)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			return fmt.Errorf("check %s: list end offsets of %s: %w", spec.Group, spec.Output, err)
		}
		var total int64
		ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
		if total != int64(h.cfg.records) {
			problems = append(problems, fmt.Sprintf("%s holds %d records, want %d", spec.Output, total, h.cfg.records))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("check %s: %s", spec.Group, strings.Join(problems, "; "))
	}
	return nil
}

// loadAverage returns the system's load averages over 1, 5 and 15
// minutes, from /proc (Linux); "" elsewhere. Other work on the machine
// skews the figures: this shows whether there was any.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
