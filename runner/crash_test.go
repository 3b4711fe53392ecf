package runner_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The crash tests run testdata/crashjob, a job that copies topic "in" to
// topic "out" (value v becomes v+"-out", the key is kept), as a child
// process against a kfake broker living in the test process, so that
// killing the job leaves the broker and its committed offsets alone.

const (
	crashGroup      = "crashjob" // the job's name: its consumer group
	crashPartitions = 4
	crashRunHeader  = "crashjob-run"
	// crashRecordDelay slows each task of the job so that it is still
	// mid-stream when the test stops it: about 5k records a second per
	// task (a poll often holds one partition's records only).
	crashRecordDelay = "200us"
)

// crashEnv is a kfake broker with "in" and "out" seeded, and clients.
type crashEnv struct {
	addr string
	cl   *kgo.Client
	adm  *kadm.Client
	bin  string // the crashjob binary
}

func crashSetup(t *testing.T) *crashEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a job binary; skipped with -short")
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(crashPartitions, "in", "out"),
		kfake.GroupMinSessionTimeout(500*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &crashEnv{addr: addr, cl: cl, adm: kadm.NewClient(cl), bin: procBuild(t, "./testdata/crashjob")}
}

// crashInput is where a seeded record landed.
type crashInput struct {
	partition int32
	offset    int64
}

func crashKey(id int) string   { return fmt.Sprintf("k%06d", id) }
func crashValue(id int) string { return fmt.Sprintf("id-%06d", id) }

// seed writes n records to "in": key k<id>, value id-<id>, partitioned by
// key as Kafka's default partitioner does. It returns where each id went.
func (e *crashEnv) seed(t *testing.T, n int) []crashInput {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := make([]crashInput, n)
	const batch = 5000
	for lo := 0; lo < n; lo += batch {
		var recs []*kgo.Record
		for id := lo; id < min(lo+batch, n); id++ {
			recs = append(recs, &kgo.Record{Topic: "in", Key: []byte(crashKey(id)), Value: []byte(crashValue(id))})
		}
		res := e.cl.ProduceSync(ctx, recs...)
		if err := res.FirstErr(); err != nil {
			t.Fatalf("seed: %v", err)
		}
		for i, r := range recs { // res is in completion order, not ours
			in[lo+i] = crashInput{r.Partition, r.Offset}
		}
	}
	return in
}

// endOffsets returns the end offset of each partition of topic.
func (e *crashEnv) endOffsets(t *testing.T, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	listed, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	ends := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	return ends
}

func crashSum(m map[int32]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// committed returns the job's committed offset of each partition of "in",
// 0 for a partition without a commit.
func (e *crashEnv) committed(t *testing.T) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resps, err := e.adm.FetchOffsets(ctx, crashGroup)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		t.Fatalf("fetch committed offsets: %v", err)
	}
	out := map[int32]int64{}
	for p := range int32(crashPartitions) {
		out[p] = 0
		if o, ok := resps.Lookup("in", p); ok && o.At >= 0 {
			out[p] = o.At
		}
	}
	return out
}

// groupEmpty reports whether the job's group has no members: a killed
// member is gone once its session timed out.
func (e *crashEnv) groupEmpty(t *testing.T) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	groups, err := e.adm.DescribeGroups(ctx, crashGroup)
	if err != nil {
		t.Fatalf("describe group: %v", err)
	}
	g, ok := groups[crashGroup]
	return !ok || len(g.Members) == 0
}

// start starts run number run of the job; extra flags follow the usual.
func (e *crashEnv) start(t *testing.T, run int, extra ...string) *proc {
	t.Helper()
	args := append([]string{"run",
		"--brokers", e.addr,
		"--state-dir", t.TempDir(),
		"--commit-interval", "200ms",
		"--session-timeout", "1s",
		"--log-level", "debug",
	}, extra...)
	env := []string{"CRASHJOB_RUN=" + strconv.Itoa(run), "CRASHJOB_RECORD_DELAY=" + crashRecordDelay}
	return procStart(t, fmt.Sprintf("crashjob run %d", run), e.bin, env, args...)
}

// waitOutputs waits until "out" holds at least n records while p runs.
func (e *crashEnv) waitOutputs(t *testing.T, p *proc, n int64) {
	t.Helper()
	procWaitFor(t, 60*time.Second, fmt.Sprintf("%s to write %d records", p.name, n), func() bool {
		p.running(t)
		return crashSum(e.endOffsets(t, "out")) >= n
	})
}

// readOut returns every record of "out", read_committed, partition by
// partition in offset order.
func (e *crashEnv) readOut(t *testing.T) []*kgo.Record {
	t.Helper()
	ends := e.endOffsets(t, "out")
	parts := map[int32]kgo.Offset{}
	for p := range ends {
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addr),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"out": parts}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	byPart := map[int32][]*kgo.Record{}
	next := map[int32]int64{}
	for {
		done := true
		for p, end := range ends {
			if next[p] < end {
				done = false
			}
		}
		if done {
			break
		}
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("read out: %v", err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("read %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			byPart[r.Partition] = append(byPart[r.Partition], r)
			next[r.Partition] = r.Offset + 1
		})
	}
	var all []*kgo.Record
	for p := range int32(crashPartitions) {
		for _, r := range byPart[p] {
			if r.Offset < ends[p] {
				all = append(all, r)
			}
		}
	}
	return all
}

// crashOutput is one output record, decoded.
type crashOutput struct {
	id, run int
}

// crashCheck decodes the output and checks what at-least-once promises:
// every input has an output (nothing lost); each run's outputs of an input
// partition are consecutive input records in offset order; and each run
// after the first resumes an input partition no earlier than the offset
// committed before it started (resumedAt[run]), so that duplicates are
// only records processed after the last commit of a crashed run. It
// returns the number of duplicates caused by each run's start.
func crashCheck(t *testing.T, inputs []crashInput, out []*kgo.Record, resumedAt map[int]map[int32]int64) (dupsByRun map[int]int, count []int) {
	t.Helper()
	count = make([]int, len(inputs))
	type span struct{ first, last int64 }
	spans := map[int]map[int32]*span{} // run -> input partition -> offsets it output
	var runs []int
	var decoded []crashOutput
	errs := 0
	report := func(format string, args ...any) { // the first few errors only
		t.Helper()
		if errs++; errs <= 10 {
			t.Errorf(format, args...)
		}
	}
	for _, r := range out {
		v, ok := strings.CutSuffix(string(r.Value), "-out")
		idStr, ok2 := strings.CutPrefix(v, "id-")
		id, err := strconv.Atoi(idStr)
		if !ok || !ok2 || err != nil || id < 0 || id >= len(inputs) {
			t.Fatalf("out/%d@%d: unexpected value %q", r.Partition, r.Offset, r.Value)
		}
		if string(r.Key) != crashKey(id) {
			t.Fatalf("out/%d@%d: key %q for value %q, want key %q", r.Partition, r.Offset, r.Key, r.Value, crashKey(id))
		}
		run := -1
		for _, h := range r.Headers {
			if h.Key == crashRunHeader {
				run, _ = strconv.Atoi(string(h.Value))
			}
		}
		if run < 0 {
			t.Fatalf("out/%d@%d: no %s header", r.Partition, r.Offset, crashRunHeader)
		}
		in := inputs[id]
		// The job partitions by key with Kafka's murmur2, as the producer
		// that seeded the input did.
		if r.Partition != in.partition {
			report("id %d: read from in/%d, written to out/%d; want the same partition", id, in.partition, r.Partition)
		}
		count[id]++
		decoded = append(decoded, crashOutput{id: id, run: run})
		if spans[run] == nil {
			spans[run] = map[int32]*span{}
			runs = append(runs, run)
		}
		s := spans[run][in.partition]
		switch {
		case s == nil:
			spans[run][in.partition] = &span{in.offset, in.offset}
		default:
			if in.offset != s.last+1 {
				report("run %d, in/%d: output of offset %d follows that of offset %d; want consecutive offsets", run, in.partition, in.offset, s.last)
			}
			s.last = in.offset
		}
	}

	var missing []int
	for id, c := range count {
		if c == 0 {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d inputs have no output (lost), the first: %v", len(missing), len(inputs), missing[:min(10, len(missing))])
	}

	slices.Sort(runs)
	for _, run := range runs {
		if run == 0 {
			continue
		}
		for p, s := range spans[run] {
			at := resumedAt[run][p]
			if s.first < at {
				t.Errorf("run %d re-processed in/%d from offset %d, below the offset %d committed before it started", run, p, s.first, at)
			} else if s.first > at {
				// A commit still in flight when the previous run was
				// killed can land after the test read the offsets.
				t.Logf("run %d resumed in/%d at %d, after the offset %d read when it started (a late commit)", run, p, s.first, at)
			}
		}
	}

	// A duplicate is an output of an input some earlier run already
	// output; attribute it to the run that wrote it again.
	dupsByRun = map[int]int{}
	slices.SortStableFunc(decoded, func(a, b crashOutput) int { return a.run - b.run })
	seen := make([]bool, len(inputs))
	for _, o := range decoded {
		if seen[o.id] {
			dupsByRun[o.run]++
		}
		seen[o.id] = true
	}
	return dupsByRun, count
}

// TestCrashAtLeastOnce kills the job with SIGKILL several times at
// varying progress, restarting it each time, then runs it to the end of
// its input. Nothing may be lost; duplicates may only come from records
// processed after the last commit before each kill.
func TestCrashAtLeastOnce(t *testing.T) {
	t.Parallel()
	e := crashSetup(t)
	const n = 50_000
	inputs := e.seed(t, n)
	start := time.Now()

	// Each run is killed once it wrote this many records. The runner
	// commits between polls of up to 10k records, so some kills come
	// before the run's first commit and some after.
	kills := []int64{4_000, 13_000, 7_000, 16_000}
	resumedAt := map[int]map[int32]int64{}
	type killInfo struct {
		outputs   int64
		committed int64
		took      time.Duration
	}
	var killed []killInfo
	for run, written := range kills {
		runStart := time.Now()
		before := crashSum(e.endOffsets(t, "out"))
		p := e.start(t, run)
		e.waitOutputs(t, p, before+written)
		p.kill(t)
		outputs := crashSum(e.endOffsets(t, "out"))
		resumedAt[run+1] = e.committed(t)
		committed := crashSum(resumedAt[run+1])
		killed = append(killed, killInfo{outputs, committed, time.Since(runStart)})
		if committed >= n {
			t.Fatalf("run %d finished the input before it was killed; slow the job down", run)
		}
		// The job commits after each poll once the commit interval has
		// passed; a poll holds at most 10k records, which take the
		// throttled job over a second.
		if prev := crashSum(resumedAt[run]); written > 10_000 && committed <= prev {
			t.Errorf("run %d wrote %d records but committed nothing (still %d input records)", run, written, prev)
		}
	}

	// A killed member stays in the group until its session times out; the
	// last run waits for it to go, so that it owns every task.
	procWaitFor(t, 30*time.Second, "the killed members to leave the group", func() bool { return e.groupEmpty(t) })
	final := len(kills)
	p := e.start(t, final, "--until-end")
	if code := p.wait(t, 90*time.Second); code != 0 {
		t.Fatalf("the --until-end run exited with code %d, want 0", code)
	}

	ends := e.endOffsets(t, "in")
	if got := e.committed(t); !crashEqual(got, ends) {
		t.Errorf("after the --until-end run, committed offsets are %v, want the end offsets %v", got, ends)
	}
	out := e.readOut(t)
	dups, _ := crashCheck(t, inputs, out, resumedAt)
	total := 0
	for run := range final + 1 {
		total += dups[run]
	}
	for i, k := range killed {
		t.Logf("kill %d: after %s, %d records in out, %d input records committed; run %d re-wrote %d of them",
			i+1, k.took.Round(time.Millisecond), k.outputs, k.committed, i+1, dups[i+1])
	}
	t.Logf("%d inputs, %d outputs, %d duplicates after %d kills (%.1f%%), in %s",
		n, len(out), total, len(kills), 100*float64(total)/n, time.Since(start).Round(time.Millisecond))
	if len(out) != n+total {
		t.Errorf("%d outputs, want %d inputs + %d duplicates", len(out), n, total)
	}
}

// TestCrashGracefulShutdown stops the job with SIGTERM mid-stream: it
// must exit 0 having committed exactly what it wrote, so that the run
// that finishes the input writes no duplicate.
func TestCrashGracefulShutdown(t *testing.T) {
	t.Parallel()
	e := crashSetup(t)
	const n = 30_000
	inputs := e.seed(t, n)

	// Past the first poll of 10k records, so that the job has committed
	// once before it is stopped.
	p := e.start(t, 0)
	e.waitOutputs(t, p, 12_000)
	if code := p.terminate(t, 30*time.Second); code != 0 {
		t.Fatalf("after SIGTERM the job exited with code %d, want 0", code)
	}
	if !strings.Contains(p.stderr.String(), "stopped") {
		t.Errorf("the job did not log that it stopped")
	}
	written := e.endOffsets(t, "out")
	committed := e.committed(t)
	if crashSum(written) >= n {
		t.Fatalf("the job finished its input before SIGTERM; slow it down")
	}
	// Each input partition's records go to the same partition of "out",
	// one for one, so a clean shutdown leaves them equal.
	if !crashEqual(committed, written) {
		t.Errorf("after SIGTERM the job committed %v input records per partition but wrote %v outputs", committed, written)
	}
	if !e.groupEmpty(t) {
		t.Errorf("the job did not leave its group on SIGTERM")
	}
	t.Logf("SIGTERM after %d of %d records", crashSum(written), n)

	p = e.start(t, 1, "--until-end")
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("the --until-end run exited with code %d, want 0", code)
	}
	out := e.readOut(t)
	dups, count := crashCheck(t, inputs, out, map[int]map[int32]int64{1: committed})
	if dups[1] != 0 {
		t.Errorf("the run after SIGTERM re-wrote %d records; a clean shutdown must commit all it wrote", dups[1])
	}
	for id, c := range count {
		if c > 1 {
			t.Errorf("id %d written %d times", id, c)
			break
		}
	}
	if len(out) != n {
		t.Errorf("%d outputs, want %d", len(out), n)
	}
}

func crashEqual(a, b map[int32]int64) bool {
	for p := range int32(crashPartitions) {
		if a[p] != b[p] {
			return false
		}
	}
	return true
}
