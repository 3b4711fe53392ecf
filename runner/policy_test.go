package runner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// countingJob counts the int64 records of each key of "in" in store
// "counts" and writes each new count to "counts". A record of a key that
// fail reports true for fails after its effects: it has written its count
// to the store and emitted it. The value 666 panics there instead.
func countingJob(name string, fail func(key string) bool) *stream.Job {
	job := stream.NewJob(name)
	in := stream.Input(job, "in", serde.String, serde.Int64)
	out := stream.Via(in, "count-then-fail", func(next stream.Processor[string, int64]) stream.Processor[string, int64] {
		var counts *state.KeyValue[string, int64]
		return stream.ProcessorFunc[string, int64](func(ctx stream.Context, r stream.Record[string, int64]) error {
			if counts == nil {
				s, err := ctx.Store("counts")
				if err != nil {
					return err
				}
				counts = state.Typed(s, serde.String, serde.Int64)
			}
			n, _, err := counts.Get(r.Key)
			if err != nil {
				return err
			}
			if err := counts.Put(r.Key, n+1); err != nil {
				return err
			}
			value := r.Value
			r.Value = n + 1
			if err := next.Process(ctx, r); err != nil {
				return err
			}
			if value == 666 {
				panic("the number of the beast")
			}
			if fail(r.Key) {
				return fmt.Errorf("%s is not welcome", r.Key)
			}
			return nil
		})
	}, stream.WithStores(stream.StoreSpec{Name: "counts"}))
	stream.Output(out, "counts", serde.String, serde.Int64)
	return job
}

func int64Value(n int64) []byte { b, _ := serde.Int64.Encode(n); return b }

// lastCounts returns the last count written for each key.
func lastCounts(t *testing.T, recs []*kgo.Record) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range recs {
		n, err := serde.Int64.Decode(r.Value)
		if err != nil {
			t.Fatalf("counts %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		out[string(r.Key)] = n
	}
	return out
}

// Records that fail to deserialize or to process go to the dead-letter
// topic with headers naming them, their effects undone; the job carries
// on and commits past them.
func TestDeadLetterTopic(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(3, "in", "counts"))
	job := countingJob("dlq", func(key string) bool { return key == "boom" })
	job.OnDeserializeError(stream.PolicyDeadLetter) // in code
	cfg := b.config()
	cfg.StateDir = t.TempDir()
	cfg.OnProcessError = "dlq" // as --on-process-error would

	type bad struct {
		rec  *kgo.Record
		kind string
	}
	var bads []bad
	for i := range 60 {
		key := fmt.Sprint("k", i%6)
		r := &kgo.Record{Topic: "in", Key: []byte(key), Value: int64Value(int64(i)),
			Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}}}
		switch i % 10 {
		case 3:
			r.Value = []byte("seven bytes?")
			bads = append(bads, bad{r, stream.KindDeserialize})
		case 7:
			r.Key = []byte("boom")
			bads = append(bads, bad{r, stream.KindProcess})
		}
		b.produce(r)
	}
	b.produce(&kgo.Record{Topic: "in", Key: []byte("beast"), Value: int64Value(666)})
	if err := runToEnd(t, job, cfg); err != nil {
		t.Fatal(err)
	}

	dl := b.readAll("dlq-dlq")
	if n := len(b.ends("dlq-dlq")); n != 3 {
		t.Errorf("dead-letter topic has %d partitions, want 3 (the input's)", n)
	}
	if len(dl) != len(bads)+1 {
		t.Fatalf("%d dead letters, want %d", len(dl), len(bads)+1)
	}
	byOffset := map[string]*kgo.Record{}
	for _, r := range dl {
		var hs []stream.Header
		for _, h := range r.Headers {
			hs = append(hs, stream.Header{Key: h.Key, Value: h.Value})
		}
		info, err := stream.ParseDeadLetter(hs)
		if err != nil {
			t.Fatalf("dead letter %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		if info.Partition != r.Partition {
			t.Errorf("dead letter of partition %d is in partition %d", info.Partition, r.Partition)
		}
		if string(r.Key) == "beast" {
			if info.Kind != stream.KindProcess || !strings.Contains(info.Error, "panic: the number of the beast") || info.Stack == "" {
				t.Errorf("dead letter of a panic: %+v", info)
			}
			continue
		}
		byOffset[fmt.Sprintf("%d@%d", info.Partition, info.Offset)] = r
		if len(info.Headers) != 1 || info.Headers[0].Key != "seq" {
			t.Errorf("dead letter keeps headers %v, want the record's own (seq)", info.Headers)
		}
		if info.Kind == stream.KindProcess && !strings.Contains(info.Error, "boom is not welcome") {
			t.Errorf("dead letter of a failure says %q", info.Error)
		}
	}
	for _, bd := range bads {
		got := byOffset[fmt.Sprintf("%d@%d", bd.rec.Partition, bd.rec.Offset)]
		switch {
		case got == nil:
			t.Errorf("no dead letter for in/%d@%d", bd.rec.Partition, bd.rec.Offset)
		case string(got.Key) != string(bd.rec.Key) || string(got.Value) != string(bd.rec.Value) || !got.Timestamp.Equal(bd.rec.Timestamp):
			t.Errorf("dead letter of in/%d@%d: %q=%q at %s, want the record as it was", bd.rec.Partition, bd.rec.Offset, got.Key, got.Value, got.Timestamp)
		}
	}

	// The good records are counted exactly; the failed ones left nothing.
	counts := lastCounts(t, b.readAll("counts"))
	want := map[string]int64{"k0": 10, "k1": 6, "k2": 10, "k3": 6, "k4": 10, "k5": 6} // no beast, no boom
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", counts, want)
	}
	ends := b.ends("in")
	for p, off := range b.committed("dlq", "in") {
		if off != ends[p] {
			t.Errorf("partition %d: committed %d, want the end %d", p, off, ends[p])
		}
	}
}

// Under the fail policy a record that fails after writing to a store
// stops the job; the state committed at shutdown must not include its
// write, or the restart, which processes it again, counts it twice. Under
// both guarantees.
func TestFailedRecordLeavesNoState(t *testing.T) {
	t.Parallel()
	for _, processing := range []runner.Guarantee{runner.AtLeastOnce, runner.ExactlyOnce} {
		t.Run(string(processing), func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, kfake.SeedTopics(1, "in", "counts"))
			cfg := b.config()
			cfg.StateDir = t.TempDir()
			cfg.Processing = processing
			for _, k := range []string{"a", "b", "a", "b", "a"} {
				b.produce(&kgo.Record{Topic: "in", Key: []byte(k), Value: int64Value(1)})
			}
			var broken atomic.Bool
			broken.Store(true)
			job := func() *stream.Job {
				return countingJob("failstate", func(key string) bool { return key == "b" && broken.Load() })
			}
			err := runToEnd(t, job(), cfg)
			checkMessage(t, "run 1", err, "in/0@1", "b is not welcome")
			if got := b.committed("failstate", "in")[0]; got != 1 {
				t.Errorf("committed %d, want 1 (the failing record)", got)
			}
			broken.Store(false) // fixed; run again from the failed record
			if err := runToEnd(t, job(), cfg); err != nil {
				t.Fatal(err)
			}
			if got := lastCounts(t, b.readCommitted("counts")); got["a"] != 3 || got["b"] != 2 {
				t.Errorf("counts %v, want a=3 b=2", got)
			}
			if got := lastCounts(t, b.readCommitted("failstate-counts-changelog")); got["a"] != 3 || got["b"] != 2 {
				t.Errorf("changelog says %v, want a=3 b=2", got)
			}
		})
	}
}

// An output larger than its topic's max.message.bytes fails the record
// that made it, by policy, naming both; many small outputs to the same
// topic are batched within its limit.
func TestRecordTooLargeForTopic(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(1, "in"))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := kadm.NewClient(b.cl).CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": kadm.StringPtr("4000")}, "out")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	job := func() *stream.Job {
		job := stream.NewJob("big")
		in := stream.Input(job, "in", serde.String, serde.String)
		stream.Output(operators.MapValues(in, func(v string) string { return strings.Repeat(v, 100) }), "out", serde.String, serde.String)
		return job
	}
	// 300 outputs of 100 bytes: 30 KB in all, far over the topic's limit
	// in one batch.
	for i := range 300 {
		b.produce(&kgo.Record{Topic: "in", Key: []byte(fmt.Sprint(i)), Value: []byte("x")})
	}
	b.produce(&kgo.Record{Topic: "in", Key: []byte("big"), Value: []byte(strings.Repeat("y", 50))}) // 5,000 bytes out
	b.produce(&kgo.Record{Topic: "in", Key: []byte("after"), Value: []byte("z")})

	err = runToEnd(t, job(), b.config())
	checkMessage(t, "fail policy", err, "in/0@300", "larger than topic out accepts", "4000")
	if n := len(b.readAll("out")); n != 300 {
		t.Errorf("%d outputs, want the 300 before the large one", n)
	}
	var tooLarge *stream.RecordTooLargeError
	if !errors.As(err, &tooLarge) {
		t.Errorf("error %v is not a RecordTooLargeError", err)
	}

	cfg := b.config()
	cfg.OnProcessError = stream.PolicyDeadLetter
	if err := runToEnd(t, job(), cfg); err != nil {
		t.Fatal(err)
	}
	if n := len(b.readAll("out")); n != 301 {
		t.Errorf("%d outputs, want 301 (all but the large one)", n)
	}
	if dl := b.readAll("big-dlq"); len(dl) != 1 || string(dl[0].Key) != "big" {
		t.Errorf("dead letters %v, want the large one's input", dl)
	}
}

func TestPolicyFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "--on-process-error=ignore"}, []string{"on-process-error", `"ignore"`, "fail, skip or dlq"}},
		{[]string{"run", "--on-deserialize-error", "drop"}, []string{"on-deserialize-error", `"drop"`}},
	} {
		code, stdout, stderr := command(t, upperJob("upper", nil), tc.args...)
		if code != 2 || stdout != "" {
			t.Errorf("%q: exit code %d, stdout %q; want 2 and nothing", tc.args, code, stdout)
		}
		checkMessage(t, "stderr", errors.New(strings.TrimSuffix(stderr, "\n")), tc.want...)
	}
}

// A record with a null key in a table's topic is no row: the running
// table drops it, and so does a restore of the table from the topic.
func TestTableNullKeyRestore(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(1, "users", "probe", "joined"))
	job := func() *stream.Job {
		job := stream.NewJob("nullkeys")
		users := stream.TableInput(job, "users", serde.String, serde.String)
		probe := stream.Input(job, "probe", serde.String, serde.String)
		stream.Output(operators.JoinTable(probe, users, func(_, _, name string) string { return name }), "joined", serde.String, serde.String)
		return job
	}
	b.produce(&kgo.Record{Topic: "users", Key: nil, Value: []byte("nobody")}, &kgo.Record{Topic: "users", Key: []byte("ann"), Value: []byte("Ann")})
	b.produce(&kgo.Record{Topic: "probe", Key: []byte(""), Value: []byte("?")}, &kgo.Record{Topic: "probe", Key: []byte("ann"), Value: []byte("?")})
	cfg := b.config()
	cfg.StateDir = t.TempDir()
	if err := runToEnd(t, job(), cfg); err != nil {
		t.Fatal(err)
	}
	// A new instance restores the table from the topic, then probes again.
	b.produce(&kgo.Record{Topic: "probe", Key: []byte(""), Value: []byte("?")}, &kgo.Record{Topic: "probe", Key: []byte("ann"), Value: []byte("?")})
	cfg.StateDir = t.TempDir()
	if err := runToEnd(t, job(), cfg); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range b.readAll("joined") {
		got = append(got, fmt.Sprintf("%q=%s", r.Key, r.Value))
	}
	if fmt.Sprint(got) != `["ann"=Ann "ann"=Ann]` {
		t.Errorf("joined %v: the null-keyed user became the empty key", got)
	}
}

// Under exactly-once a dead letter is written in the transaction of the
// commit that moves past its record: transactional, and visible to
// read_committed readers once, with the outputs of the good records.
func TestDeadLetterExactlyOnce(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(2, "in", "counts"))
	cfg := b.config()
	cfg.StateDir = t.TempDir()
	cfg.Processing = runner.ExactlyOnce
	cfg.OnDeserializeError = stream.PolicyDeadLetter
	cfg.OnProcessError = stream.PolicyDeadLetter
	var bad int
	for i := range 40 {
		r := &kgo.Record{Topic: "in", Key: []byte(fmt.Sprint("k", i%4)), Value: int64Value(int64(i))}
		switch i % 5 {
		case 1:
			r.Value, bad = []byte("?"), bad+1
		case 3:
			r.Key, bad = []byte("boom"), bad+1
		}
		b.produce(r)
	}
	if err := runToEnd(t, countingJob("eosdlq", func(key string) bool { return key == "boom" }), cfg); err != nil {
		t.Fatal(err)
	}
	dl := b.readCommitted("eosdlq-dlq")
	if len(dl) != bad {
		t.Fatalf("%d dead letters read committed, want %d", len(dl), bad)
	}
	for _, r := range dl {
		if !r.Attrs.IsTransactional() {
			t.Errorf("dead letter %s/%d@%d was written outside a transaction", r.Topic, r.Partition, r.Offset)
		}
	}
	if got := lastCounts(t, b.readCommitted("counts")); fmt.Sprint(got) != "map[k0:6 k1:6 k2:6 k3:6]" {
		t.Errorf("counts %v", got)
	}
}

// readCommitted returns the committed records of topic up to its current
// end offsets, as a read_committed consumer sees them.
func (b *broker) readCommitted(topic string) []*kgo.Record {
	b.t.Helper()
	ends := b.ends(topic)
	offsets := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, end := range ends {
		if end > 0 {
			offsets[int32(p)] = kgo.NewOffset().AtStart()
			left[int32(p)] = end
		}
	}
	if len(left) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // the markers end the transactions: they tell where the end is
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
	if err != nil {
		b.t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out []*kgo.Record
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			b.t.Fatalf("read %s: %v (still waiting for partitions %v)", topic, err, left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := left[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset+1 == end {
				delete(left, r.Partition)
			}
		})
	}
	return out
}
