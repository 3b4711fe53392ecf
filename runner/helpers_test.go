package runner_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// waitTimeout bounds every wait of these tests: generous, because -race
// on two cores is slow, yet far from any hang the test would hide.
const waitTimeout = 30 * time.Second

// broker is an in-process Kafka-protocol cluster (kfake, one node) for one
// test, with a client to produce to it and read from it.
type broker struct {
	t    *testing.T
	c    *kfake.Cluster
	addr string
	cl   *kgo.Client
}

// newBroker starts a cluster that accepts short group session timeouts.
// Seed its topics with kfake.SeedTopics.
func newBroker(t *testing.T, opts ...kfake.Opt) *broker {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return &broker{t: t, c: c, addr: addr, cl: cl}
}

// config is a runner configuration for this broker, tuned for tests:
// frequent commits, a session timeout short enough to rebalance quickly.
func (b *broker) config() runner.Config {
	return runner.Config{
		Brokers:        []string{b.addr},
		CommitInterval: 100 * time.Millisecond,
		SessionTimeout: time.Second,
		ConnectTimeout: 5 * time.Second,
		Logger:         testLogger(b.t),
	}
}

// produce writes recs and waits for them to be acknowledged. Records
// without a partition set are partitioned by key (murmur2, as Kafka's
// default partitioner does).
func (b *broker) produce(recs ...*kgo.Record) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		b.t.Fatalf("produce: %v", err)
	}
}

// ends returns the end offset of each partition of topic.
func (b *broker) ends(topic string) []int64 {
	b.t.Helper()
	infos := b.c.PartitionInfos(topic)
	if infos == nil {
		b.t.Fatalf("topic %q does not exist", topic)
	}
	ends := make([]int64, len(infos))
	for i, pi := range infos {
		ends[i] = pi.HighWatermark
	}
	return ends
}

func sum(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return n
}

// committed returns the offsets group committed for topic, by partition.
func (b *broker) committed(group, topic string) map[int32]int64 {
	out := map[int32]int64{}
	if g := b.c.GroupInfo(group); g != nil {
		for p, c := range g.Commits[topic] {
			out[p] = c.Offset
		}
	}
	return out
}

// readAll returns every record of topic up to its current end offsets,
// ordered by partition, then offset.
func (b *broker) readAll(topic string) []*kgo.Record {
	b.t.Helper()
	ends := b.ends(topic)
	want := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end > 0 {
			want[int32(p)] = end
			offsets[int32(p)] = kgo.NewOffset().AtStart()
		}
	}
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
	if err != nil {
		b.t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			b.t.Fatalf("read %s: %v (still waiting for partitions %v)", topic, err, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Partition]; ok && r.Offset < end {
				out = append(out, r)
				if r.Offset+1 == end {
					delete(want, r.Partition)
				}
			}
		})
	}
	slices.SortFunc(out, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out
}

// waitRecords waits until topic holds at least n records, then reads them
// all.
func (b *broker) waitRecords(topic string, n int) []*kgo.Record {
	b.t.Helper()
	waitFor(b.t, fmt.Sprintf("%d records in %s", n, topic), func() bool { return sum(b.ends(topic)) >= int64(n) })
	return b.readAll(topic)
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, waitTimeout, what, cond)
}

// waitWithin polls cond until it holds, failing the test after timeout.
func waitWithin(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running is a Runner's Run in a goroutine.
type running struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
}

// start runs job in the background. The test's cleanup stops it.
func start(t *testing.T, job *stream.Job, cfg runner.Config) *running {
	t.Helper()
	r, err := runner.New(job, cfg)
	if err != nil {
		t.Fatalf("runner.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rn := &running{t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-rn.done:
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %s of being cancelled", waitTimeout)
		}
	})
	return rn
}

// wait returns Run's result, failing the test if it takes longer than
// waitTimeout.
func (rn *running) wait() error {
	rn.t.Helper()
	select {
	case err := <-rn.done:
		rn.done <- err // for the cleanup
		return err
	case <-time.After(waitTimeout):
		rn.t.Fatalf("Run did not return within %s", waitTimeout)
		return nil
	}
}

// stop cancels Run and returns its result.
func (rn *running) stop() error {
	rn.t.Helper()
	rn.cancel()
	return rn.wait()
}

// runToEnd runs job with UntilEnd and returns Run's result.
func runToEnd(t *testing.T, job *stream.Job, cfg runner.Config) error {
	t.Helper()
	cfg.UntilEnd = true
	return start(t, job, cfg).wait()
}

// testLogger sends the runner's warnings and errors to the test log (all
// of its logs with -v), until the test ends.
func testLogger(t *testing.T) hclog.Logger {
	level := hclog.Warn
	if testing.Verbose() {
		level = hclog.Info
	}
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: level, Output: w})
}

// testWriter writes to t.Log, and drops what is written after the test
// ended (t.Log would panic).
type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}

// upperJob reads "in" and writes each record to "out" with its value
// upper-cased, its key kept. tap, if not nil, is inserted before the map
// to observe the records.
func upperJob(name string, tap func(stream.Stream[string, string]) stream.Stream[string, string]) *stream.Job {
	job := stream.NewJob(name)
	s := stream.Input(job, "in", serde.String, serde.String)
	if tap != nil {
		s = tap(s)
	}
	upper := operators.MapValues(s, strings.ToUpper)
	stream.Output(upper, "out", serde.String, serde.String)
	return job
}

// seqRecords returns n records for topic numbered from first: record i
// has key "key-<i mod keys>" and value "value-<i>", so records of one key
// carry increasing numbers.
func seqRecords(topic string, first, n, keys int) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for j := range recs {
		i := first + j
		recs[j] = &kgo.Record{
			Topic: topic,
			Key:   fmt.Appendf(nil, "key-%d", i%keys),
			Value: fmt.Appendf(nil, "value-%d", i),
		}
	}
	return recs
}

// checkUpper checks that out holds the upper-cased value of every record
// of in exactly once (at least once if !exact), with its key, in the
// input's partition, and nothing else. If exact, it also checks that the
// records of each key are in input order.
func checkUpper(t *testing.T, in, out []*kgo.Record, exact bool) {
	t.Helper()
	type source struct {
		key       string
		partition int32
		seq       int
	}
	want := map[string]source{}
	for _, r := range in {
		var seq int
		fmt.Sscanf(string(r.Value), "value-%d", &seq)
		want[strings.ToUpper(string(r.Value))] = source{string(r.Key), r.Partition, seq}
	}
	seen := map[string]int{}
	lastSeq := map[string]int{}
	dups := 0
	for _, r := range out {
		v := string(r.Value)
		src, ok := want[v]
		switch {
		case !ok:
			t.Errorf("unexpected output %s/%d@%d key=%q value=%q", r.Topic, r.Partition, r.Offset, r.Key, v)
			continue
		case string(r.Key) != src.key:
			t.Errorf("output %q has key %q, want %q", v, r.Key, src.key)
		case r.Partition != src.partition:
			t.Errorf("output %q (key %q) is in partition %d, its input in %d", v, r.Key, r.Partition, src.partition)
		}
		if seen[v]++; seen[v] > 1 {
			dups++
		}
		if exact {
			if last, ok := lastSeq[src.key]; ok && src.seq <= last {
				t.Errorf("key %q: output of record %d comes after that of record %d", src.key, src.seq, last)
			}
			lastSeq[src.key] = src.seq
		}
	}
	missing := 0
	for v := range want {
		if seen[v] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d inputs have no output", missing, len(in))
	}
	if exact && dups > 0 {
		t.Errorf("%d outputs are duplicates; want each input exactly once", dups)
	}
	if !exact && dups > 0 {
		t.Logf("%d duplicate outputs (allowed: at-least-once)", dups)
	}
}

// ownership tracks which runner owns which task, from the Init and Close
// of a processor in each task, and which runner processed records of
// which partition. It records a violation if a task starts on one runner
// while another still has it, or if a runner processes a record of a task
// it does not own.
type ownership struct {
	mu         sync.Mutex
	owner      map[int32]string           // partition -> runner
	processed  map[string]map[int32]int64 // runner -> partition -> records
	violations []string
}

func newOwnership() *ownership {
	return &ownership{owner: map[int32]string{}, processed: map[string]map[int32]int64{}}
}

// tap returns the job hook that reports to o as runner.
func (o *ownership) tap(runner string) func(stream.Stream[string, string]) stream.Stream[string, string] {
	return func(s stream.Stream[string, string]) stream.Stream[string, string] {
		return operators.Process(s, func(next stream.Processor[string, string]) stream.Processor[string, string] {
			return &ownedTask{o: o, runner: runner, next: next}
		})
	}
}

// owned returns how many tasks runner owns now.
func (o *ownership) owned(runner string) (n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range o.owner {
		if r == runner {
			n++
		}
	}
	return n
}

// partitions returns the partitions whose records runner processed.
func (o *ownership) partitions(runner string) []int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ps []int32
	for p := range o.processed[runner] {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// check fails the test on any violation seen.
func (o *ownership) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, v := range o.violations {
		t.Error(v)
	}
}

type ownedTask struct {
	o         *ownership
	runner    string
	partition int32
	next      stream.Processor[string, string]
}

func (p *ownedTask) Init(ctx stream.Context) error {
	o := p.o
	p.partition = ctx.TaskID().Partition
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev, ok := o.owner[p.partition]; ok {
		o.violations = append(o.violations, fmt.Sprintf("task %s started on runner %s while runner %s still had it", ctx.TaskID(), p.runner, prev))
	}
	o.owner[p.partition] = p.runner
	return nil
}

func (p *ownedTask) Close() error {
	o := p.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owner[p.partition] == p.runner {
		delete(o.owner, p.partition)
	}
	return nil
}

func (p *ownedTask) Process(ctx stream.Context, rec stream.Record[string, string]) error {
	o := p.o
	o.mu.Lock()
	if owner := o.owner[rec.Partition]; owner != p.runner {
		o.violations = append(o.violations, fmt.Sprintf("runner %s processed %s/%d@%d, a record of a task owned by %q", p.runner, rec.Topic, rec.Partition, rec.Offset, owner))
	}
	if o.processed[p.runner] == nil {
		o.processed[p.runner] = map[int32]int64{}
	}
	o.processed[p.runner][rec.Partition]++
	o.mu.Unlock()
	return p.next.Process(ctx, rec)
}

// waitCommitted waits until group has committed the end offset of every
// partition of topic: everything is processed and its outputs written.
func (b *broker) waitCommitted(group, topic string) {
	b.t.Helper()
	waitFor(b.t, fmt.Sprintf("group %s to commit all of %s", group, topic), func() bool {
		c := b.committed(group, topic)
		for p, end := range b.ends(topic) {
			if c[int32(p)] != end {
				return false
			}
		}
		return true
	})
}
