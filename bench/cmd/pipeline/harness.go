package main

import (
	"context"
	"encoding/binary"
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

	work   workload
	prefix string                        // of every topic and group this invocation creates
	input  string                        // the seeded input
	ends   map[string]kadm.ListedOffsets // of the input, and of what the variants read

	source  string // what the variants read: the input, or the changelog of job
	records int64  // the records in source
	job     string // the job the harness ran once, whose changelog the restore workload reads
	table   string // the join workload's table topic

	// What the variants that write must write: how many records and, for
	// counts, how many distinct keys.
	wantOut  int64
	wantKeys int
	wantSum  int64 // for windowed counts, what the counts add up to
}

// run is the command: it starts the broker (or joins the one given),
// seeds the input, runs the variants and prints what it measured to w.
func run(ctx context.Context, cfg config, w io.Writer) error {
	h := &harness{cfg: cfg, w: w, brokers: cfg.brokers, work: workloads[cfg.workload], ends: map[string]kadm.ListedOffsets{}}
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
	if h.work.table {
		if err := h.seedTable(ctx); err != nil {
			return err
		}
		if h.broker == nil {
			defer h.deleteTopic(context.Background(), h.table)
		}
	}
	if err := h.seed(ctx); err != nil {
		return err
	}
	h.source, h.records = h.input, int64(cfg.records)
	if h.work.restore {
		if err := h.prepareRestore(ctx); err != nil {
			return err
		}
		fmt.Fprintf(w, "\neach run: reads the %s records of %s, %d partitions\n\n", thousands(float64(h.records)), h.source, cfg.partitions)
	} else {
		what := fmt.Sprintf("%d-byte values", cfg.valueSize)
		if h.work.lines {
			what = fmt.Sprintf("lines of %d words (%s words in all)", wordsPerLine, thousands(float64(h.wantOut)))
		}
		fmt.Fprintf(w, "\neach run: workload %s, %s records of %s over %d keys, %d partitions, commit interval %s\n\n",
			cfg.workload, thousands(float64(cfg.records)), what, cfg.keys, cfg.partitions, cfg.commitInterval)
	}
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
	h.wantOut, h.wantKeys = int64(h.cfg.records), min(h.cfg.keys, h.cfg.records)
	if h.work.lines {
		values = bench.Lines(seedValues, wordsPerLine, vocabulary)
		h.wantOut, h.wantKeys = wordsOf(values, h.cfg.records)
	}
	var failed atomic.Pointer[error]
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			err = fmt.Errorf("seed: produce to %s/%d: %w", r.Topic, r.Partition, err)
			failed.CompareAndSwap(nil, &err)
		}
	}
	brokerBefore, brokerKnown := h.broker.cpu()
	start := time.Now()
	if h.work.windowed {
		h.wantOut, h.wantSum = windowedExpect(h.cfg.records, keys, h.input, h.cfg.partitions)
	}
	for i := range h.cfg.records {
		r := &kgo.Record{Key: keys[i%len(keys)], Value: values[i%len(values)]}
		if h.work.windowed {
			r.Timestamp = windowedTimestamp(i, h.cfg.records)
		}
		cl.Produce(ctx, r, promise)
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("seed: flush: %w", err)
	}
	elapsed := time.Since(start)
	brokerAfter, _ := h.broker.cpu()
	if err := failed.Load(); err != nil {
		return *err
	}

	total, err := h.listEnds(ctx, h.input)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
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
// what it did, and deletes the group and the topics it created.
func (h *harness) runOnce(ctx context.Context, variant string, n int) (result, error) {
	v := h.work.variants[variant]
	name := fmt.Sprintf("%s-%s-%d", h.prefix, variant, n)
	spec := childSpec{
		Workload:       h.cfg.workload,
		Variant:        variant,
		Brokers:        h.brokers,
		Input:          h.source,
		Table:          h.table,
		Group:          name,
		CommitInterval: h.cfg.commitInterval,
		Threads:        h.cfg.samsaThreads,
		ExactlyOnce:    v.exactlyOnce,
	}
	if v.rerun {
		spec.Input, spec.Group = h.input, h.job
	}
	if h.cfg.cpuProfileDir != "" {
		spec.CPUProfile = filepath.Join(h.cfg.cpuProfileDir, fmt.Sprintf("%s-%d.pprof", variant, n))
	}
	if v.writes {
		spec.Output = name
		if err := h.createTopic(ctx, spec.Output); err != nil {
			return result{}, err
		}
	}

	res, err := runChild(ctx, spec, int(h.records), h.broker)
	res.run = n
	if err == nil {
		err = h.verify(ctx, spec)
	}
	if err == nil && v.rerun && res.Restored != h.records {
		err = fmt.Errorf("check %s: restored %d records, want %d", spec.Group, res.Restored, h.records)
	}
	if !v.rerun {
		err = errors.Join(err, h.cleanUp(ctx, spec.Group))
	}
	return res, err
}

// cleanUp deletes the group of a run, and the topics named after it: its
// output and, for a samsa job, its internal topics.
func (h *harness) cleanUp(ctx context.Context, group string) error {
	var err error
	if _, derr := h.adm.DeleteGroup(ctx, group); derr != nil {
		err = fmt.Errorf("delete group %s: %w", group, derr)
	}
	topics, lerr := h.adm.ListTopics(ctx)
	if lerr != nil {
		return errors.Join(err, fmt.Errorf("list topics: %w", lerr))
	}
	for _, t := range topics.Names() {
		if t == group || strings.HasPrefix(t, group+"-") {
			err = errors.Join(err, h.deleteTopic(ctx, t))
		}
	}
	return err
}

// prepareRestore runs the samsa count job once over the input, so that
// its changelog holds a record per key, and makes that changelog what the
// variants read.
func (h *harness) prepareRestore(ctx context.Context) error {
	h.job = h.prefix + "-job"
	spec := childSpec{
		Workload:       "count",
		Variant:        "samsa",
		Brokers:        h.brokers,
		Input:          h.input,
		Group:          h.job,
		Output:         h.job + "-output",
		CommitInterval: h.cfg.commitInterval,
		Threads:        h.cfg.samsaThreads,
	}
	if err := h.createTopic(ctx, spec.Output); err != nil {
		return err
	}
	res, err := runChild(ctx, spec, h.cfg.records, h.broker)
	if err == nil {
		err = h.verify(ctx, spec)
	}
	if err == nil {
		err = h.deleteTopic(ctx, spec.Output)
	}
	if err != nil {
		return fmt.Errorf("restore: run the count job: %w", err)
	}
	h.source = h.job + "-counts-changelog"
	if h.records, err = h.listEnds(ctx, h.source); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(h.w, "restore: the count job %s processed %s records in %.2fs (%s records/s, peak RSS %s MiB); its changelog %s holds %s records\n",
		h.job, thousands(float64(h.cfg.records)), res.Elapsed.Seconds(), thousands(res.perSecond()), rss(res.peakRSS),
		h.source, thousands(float64(h.records)))
	return nil
}

// listEnds notes the end offsets (for a read_committed reader) of topic,
// and returns how many records it holds past its start.
func (h *harness) listEnds(ctx context.Context, topic string) (int64, error) {
	starts, err := h.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	ends, err := h.adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	h.ends[topic] = ends
	var total int64
	ends.Each(func(end kadm.ListedOffset) {
		total += end.Offset
		if start, ok := starts.Lookup(end.Topic, end.Partition); ok {
			total -= start.Offset
		}
	})
	return total, nil
}

// verify checks that a run did all its work: its group committed the end
// offsets of what it read, and its output, if it writes one, holds the
// records it should; running counts must add up, key by key.
func (h *harness) verify(ctx context.Context, spec childSpec) error {
	committed, err := h.adm.FetchOffsets(ctx, spec.Group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return fmt.Errorf("check %s: fetch its committed offsets: %w", spec.Group, err)
	}
	var problems []string
	h.ends[spec.Input].Each(func(end kadm.ListedOffset) {
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
		if spec.ExactlyOnce { // transaction markers take offsets too
			if total, err = h.committedRecords(ctx, spec.Output, ends); err != nil {
				return fmt.Errorf("check %s: %w", spec.Group, err)
			}
		}
		if total != h.wantOut {
			problems = append(problems, fmt.Sprintf("%s holds %d records, want %d", spec.Output, total, h.wantOut))
		} else if workloads[spec.Workload].counts {
			if err := h.checkCounts(ctx, spec.Output, total); err != nil {
				problems = append(problems, err.Error())
			}
		} else if workloads[spec.Workload].table {
			if err := h.checkJoin(ctx, spec.Output, total); err != nil {
				problems = append(problems, err.Error())
			}
		} else if workloads[spec.Workload].windowed {
			if err := h.checkWindowed(ctx, spec.Output, total); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("check %s: %s", spec.Group, strings.Join(problems, "; "))
	}
	return nil
}

// checkCounts reads the total records of topic, running counts, and
// checks that the last count of each key (its total: a key's counts are
// in one partition, in order) adds up to the expected total, over the
// expected number of keys.
func (h *harness) checkCounts(ctx context.Context, topic string, total int64) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(h.brokers...),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	last := map[string]int64{}
	var read int64
	var bad []string
	for read < total {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("read %s: %d of %d records: %w", topic, read, total, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			if len(r.Value) != 8 {
				bad = append(bad, fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, r.Offset))
				return
			}
			last[string(r.Key)] = int64(binary.BigEndian.Uint64(r.Value))
		})
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s: %d records are not 8-byte counts, such as %s", topic, len(bad), bad[0])
	}
	var sum int64
	for _, n := range last {
		sum += n
	}
	if sum != h.wantOut || len(last) != h.wantKeys {
		return fmt.Errorf("%s: the last counts of its %d keys add up to %d, want %d over %d keys", topic, len(last), sum, h.wantOut, h.wantKeys)
	}
	return nil
}

// wordsPerLine and vocabulary shape the lines of the word-count workload.
const (
	wordsPerLine = 10
	vocabulary   = 1000
)

// wordsOf returns how many words the first n records of the input hold,
// record i having line i mod len(lines), and how many distinct words.
func wordsOf(lines [][]byte, n int) (words int64, distinct int) {
	perLine := make([]int64, len(lines))
	seen := map[string]bool{}
	for i, l := range lines {
		ws := bench.Words(string(l))
		perLine[i] = int64(len(ws))
		if i < n {
			for _, w := range ws {
				seen[w] = true
			}
		}
	}
	for i := range n {
		words += perLine[i%len(lines)]
	}
	return words, len(seen)
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
