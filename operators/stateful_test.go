package operators_test

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// wordCount is the classic: lines in, running counts per word out,
// re-keyed through a repartition topic.
func wordCount() *stream.Job {
	job := stream.NewJob("wc")
	lines := stream.Input(job, "lines", serde.String, serde.String)
	words := operators.FlatMapValues(lines, func(l string) []string { return strings.Fields(strings.ToLower(l)) })
	counts := operators.Count(operators.GroupBy(words, "words", func(_, w string) string { return w }, serde.String, serde.String), "counts")
	stream.Output(counts.ToStream(), "counts", serde.String, serde.Int64)
	return job
}

func TestWordCountThroughRepartition(t *testing.T) {
	d, err := runnertest.New(wordCount(),
		runnertest.Partitions("lines", 3), runnertest.Partitions("counts", 2))
	if err != nil {
		t.Fatal(err)
	}
	topo := d.Topology()
	if n := len(topo.Subtopologies()); n != 2 {
		t.Fatalf("%d sub-topologies, want 2 (split at the repartition topic):\n%s", n, topo)
	}
	in := runnertest.NewInput(d, "lines", serde.String, serde.String)
	for i, line := range []string{"the cat", "The dog", "a cat and THE dog", "cat"} {
		if err := in.Pipe(fmt.Sprint(i), line); err != nil {
			t.Fatal(err)
		}
	}
	kvs, err := runnertest.NewOutput(d, "counts", serde.String, serde.Int64).KeyValues()
	if err != nil {
		t.Fatal(err)
	}
	// The last count of each word is its total; each count increases by
	// one per occurrence.
	last := map[string]int64{}
	for _, kv := range kvs {
		if kv.Value != last[kv.Key]+1 {
			t.Errorf("%s: count %d after %d", kv.Key, kv.Value, last[kv.Key])
		}
		last[kv.Key] = kv.Value
	}
	want := map[string]int64{"the": 3, "cat": 3, "dog": 2, "a": 1, "and": 1}
	if !maps.Equal(last, want) {
		t.Errorf("counts %v, want %v", last, want)
	}

	// The store holds the same, and its changelog has one record per update
	// (the driver commits after every record).
	total := 0
	for p := range int32(3) {
		if s := d.Store("counts", p); s != nil {
			it := state.Typed(s, serde.String, serde.Int64).All()
			for it.Next() {
				if want[it.Key()] != it.Value() {
					t.Errorf("store: %s=%d, want %d", it.Key(), it.Value(), want[it.Key()])
				}
				total++
			}
			it.Close()
		}
	}
	if total != len(want) {
		t.Errorf("stores hold %d words, want %d", total, len(want))
	}
	if n := len(d.AllRecords("wc-counts-changelog")); n != 10 {
		t.Errorf("changelog has %d records, want 10", n)
	}
}

func TestAggregateAndReduce(t *testing.T) {
	job := stream.NewJob("agg")
	in := stream.Input(job, "in", serde.String, serde.Int64)
	g := operators.GroupByKey(in, serde.String, serde.Int64)
	maxes := operators.Reduce(g, "max", func(a, v int64) int64 { return max(a, v) })
	sums := operators.Aggregate(g, "sums", func() string { return "" },
		func(_ string, v int64, acc string) string { return acc + fmt.Sprint(v) + ";" }, serde.String)
	stream.Output(maxes.ToStream(), "max", serde.String, serde.Int64)
	stream.Output(sums.ToStream(), "sums", serde.String, serde.String)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	pin := runnertest.NewInput(d, "in", serde.String, serde.Int64)
	for _, kv := range []stream.KeyValue[string, int64]{stream.KV("a", int64(3)), stream.KV("b", int64(1)), stream.KV("a", int64(7)), stream.KV("a", int64(5))} {
		if err := pin.Pipe(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	gotMax, _ := runnertest.NewOutput(d, "max", serde.String, serde.Int64).KeyValues()
	if fmt.Sprint(gotMax) != "[{a 3} {b 1} {a 7} {a 7}]" {
		t.Errorf("max: %v", gotMax)
	}
	gotSums, _ := runnertest.NewOutput(d, "sums", serde.String, serde.String).KeyValues()
	if fmt.Sprint(gotSums) != "[{a 3;} {b 1;} {a 3;7;} {a 3;7;5;}]" {
		t.Errorf("sums: %v", gotSums)
	}
}

func TestTableInputMirrorsTopic(t *testing.T) {
	job := stream.NewJob("tab")
	users := stream.TableInput(job, "users", serde.String, serde.String)
	stream.OutputTable(users, "users-copy", serde.String, serde.String)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []stream.RawRecord{
		{Key: []byte("ann"), Value: []byte("Ann")},
		{Key: []byte("bob"), Value: []byte("Bob")},
		{Key: []byte("ann"), Value: nil}, // tombstone
	} {
		if err := d.Pipe("users", r); err != nil {
			t.Fatal(err)
		}
	}
	out := d.AllRecords("users-copy")
	if len(out) != 3 || out[2].Value != nil || string(out[2].Key) != "ann" {
		t.Fatalf("copy: %v", out)
	}
	s := d.Store("users", 0)
	if _, err := s.Get([]byte("ann")); err == nil {
		t.Error("deleted key still in the table's store")
	}
	if v, err := s.Get([]byte("bob")); err != nil || string(v) != "Bob" {
		t.Errorf("bob: %q, %v", v, err)
	}
	if err := s.Put([]byte("x"), []byte("y")); err == nil {
		t.Error("a table read from a topic accepted a write")
	}
	if n := len(d.AllRecords("tab-users-changelog")); n != 0 {
		t.Errorf("a topic table wrote %d changelog records; its topic is its changelog", n)
	}
}
