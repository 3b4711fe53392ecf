package runner_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// winJob counts the records of each key of "in" per 10ms tumbling window,
// grace 5ms, final results only, and writes them to "out".
func winJob() *stream.Job {
	job := stream.NewJob("winjob")
	in := stream.Input(job, "in", serde.String, serde.String)
	counts := operators.WindowedCount(operators.GroupByKey(in, serde.String, serde.String), "counts",
		operators.Tumbling(10*time.Millisecond).WithGrace(5*time.Millisecond).EmitFinal())
	stream.Output(counts.ToStream(), "out", stream.WindowedSerde(serde.String), serde.Int64)
	return job
}

// winRecords returns n records with keys k0..k9, timestamps advancing
// from at with some disorder, and every 25th record far behind: late.
func winRecords(rng *rand.Rand, at int64, n int) ([]*kgo.Record, int64) {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		ts := at + int64(rng.IntN(12)) - 6 // up to 6ms out of order
		if i%25 == 0 {
			ts = at - 40 // closed for any grace of 5ms
		}
		at += int64(rng.IntN(3))
		recs[i] = &kgo.Record{Topic: "in", Key: fmt.Appendf(nil, "k%d", rng.IntN(10)), Value: []byte("v"), Timestamp: time.UnixMilli(ts)}
	}
	return recs, at
}

// Windowed counts through the runner, stopped and restarted twice (once on
// an empty state directory: a new instance restoring everything, once on
// the first run's directory, restoring its tail), equal those of the
// in-process driver over the same log without restarts: the same final
// results, in the same order per partition, each once. Each phase begins
// with late records, which only a restored stream time recognises.
func TestWindowsExactAcrossRestarts(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 8))
	first := t.TempDir()
	var all []*kgo.Record
	at := int64(1_700_000_000_000)
	for phase, dir := range []string{first, t.TempDir(), first} {
		var recs []*kgo.Record
		recs, at = winRecords(rng, at, 600)
		ctx, cancel := context.WithTimeout(context.Background(), stWait)
		if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		cancel()
		all = append(all, recs...)
		log := stNewLog(t)
		stRunToEnd(t, winJob(), e.config(dir, log.logger(fmt.Sprintf("phase %d", phase))))
	}

	// The same log, in-process, in one go.
	d, err := runnertest.New(winJob(), runnertest.Partitions("in", stPartitions), runnertest.Partitions("out", stPartitions))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, r := range all {
		rec := stream.RawRecord{Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Partition: r.Partition}
		if err := d.Pipe("in", rec); err != nil {
			t.Fatal(err)
		}
	}
	if late := d.Dropped()["late"]; late < 3*600/25 {
		t.Errorf("the driver dropped %d late records, want at least %d", late, 3*600/25)
	}
	n := compareByTask(t, e, d, "out", func(key []byte) string {
		wk, err := stream.WindowedSerde(serde.String).Decode(key)
		if err != nil {
			t.Fatalf("result key %x: %v", key, err)
		}
		return wk.Key
	})
	t.Logf("%d records, %d window results, %d late", len(all), n, d.Dropped()["late"])
}

// compareByTask checks that the runner wrote to topic what the driver d
// did, task by task: an output partition holds the records of several
// tasks, interleaved as the tasks ran, but each task's own records come in
// a defined order. With no repartition, the task of a record is the input
// partition of its key, which inner returns. It returns the records
// compared.
func compareByTask(t *testing.T, e *stEnv, d *runnertest.Driver, topic string, inner func(key []byte) string) int {
	t.Helper()
	byTask := func(recs []stream.RawRecord) map[string][]string {
		out := map[string][]string{}
		for _, r := range recs {
			k := inner(r.Key)
			task := fmt.Sprintf("%s %d, task 0_%d", topic, r.Partition, d.PartitionFor("in", []byte(k)))
			out[task] = append(out[task], fmt.Sprintf("%x=%x@%d", r.Key, r.Value, r.Timestamp.UnixMilli()))
		}
		return out
	}
	var got, want []stream.RawRecord
	for _, r := range e.readAll(topic) {
		got = append(got, stream.RawRecord{Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Partition: r.Partition})
	}
	for p := range int32(stPartitions) {
		want = append(want, d.Records(topic, p)...)
	}
	if len(got) != len(want) {
		t.Errorf("the runner wrote %d records to %s, the driver %d", len(got), topic, len(want))
	}
	gotBy, wantBy := byTask(got), byTask(want)
	for _, task := range slices.Sorted(maps.Keys(wantBy)) {
		if g, w := gotBy[task], wantBy[task]; !slices.Equal(g, w) {
			t.Errorf("%s:\nrunner %q\ndriver %q", task, g, w)
		}
	}
	return len(want)
}

// With Config.OnDropped = dlq the runner creates the dead-letter topic and
// writes each late record there, with its reason.
func TestLateRecordsDeadLettered(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	recs := []*kgo.Record{
		{Topic: "in", Key: []byte("k"), Value: []byte("a"), Timestamp: time.UnixMilli(1_000)},
		{Topic: "in", Key: []byte("k"), Value: []byte("b"), Timestamp: time.UnixMilli(1_100)},
		{Topic: "in", Key: []byte("k"), Value: []byte("late"), Timestamp: time.UnixMilli(1_001)},
	}
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cfg := e.config(t.TempDir(), stNewLog(t).logger("run"))
	cfg.OnDropped = stream.PolicyDeadLetter
	stRunToEnd(t, winJob(), cfg)
	dlq := e.readAll("winjob-dlq")
	if len(dlq) != 1 || string(dlq[0].Value) != "late" {
		t.Fatalf("dead letters: %d records, want the late one", len(dlq))
	}
	var headers []stream.Header
	for _, h := range dlq[0].Headers {
		headers = append(headers, stream.Header{Key: h.Key, Value: h.Value})
	}
	dl, err := stream.ParseDeadLetter(headers)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Kind != stream.KindDropped || dl.Error != "dropped by an operator: late" || dl.Offset != recs[2].Offset {
		t.Errorf("dead letter: %+v", dl)
	}
}
