package operators_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

type kv = stream.KeyValue[string, string]

// run pipes inputs (all to partition 0) through the job built by build
// and returns the key/values written to each named output.
func run(t *testing.T, build func(in stream.Stream[string, string]), inputs []kv, outputs ...string) map[string][]kv {
	t.Helper()
	job := stream.NewJob("test")
	build(stream.Input(job, "in", serde.String, serde.String))
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	in := runnertest.NewInput(d, "in", serde.String, serde.String)
	for _, r := range inputs {
		if err := in.Pipe(r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	got := map[string][]kv{}
	for _, o := range outputs {
		kvs, err := runnertest.NewOutput(d, o, serde.String, serde.String).KeyValues()
		if err != nil {
			t.Fatal(err)
		}
		got[o] = kvs
	}
	return got
}

func out(s stream.Stream[string, string]) { stream.Output(s, "out", serde.String, serde.String) }

func TestStateless(t *testing.T) {
	input := []kv{stream.KV("a", "1"), stream.KV("b", "22"), stream.KV("c", "333"), stream.KV("d", "")}
	tests := []struct {
		name  string
		build func(stream.Stream[string, string])
		want  []kv
	}{
		{"map", func(s stream.Stream[string, string]) {
			out(operators.Map(s, func(k, v string) (string, string) { return v, k }))
		}, []kv{stream.KV("1", "a"), stream.KV("22", "b"), stream.KV("333", "c"), stream.KV("", "d")}},
		{"map-values", func(s stream.Stream[string, string]) {
			out(operators.MapValues(s, func(v string) string { return v + "!" }))
		}, []kv{stream.KV("a", "1!"), stream.KV("b", "22!"), stream.KV("c", "333!"), stream.KV("d", "!")}},
		{"filter", func(s stream.Stream[string, string]) {
			out(operators.Filter(s, func(_, v string) bool { return len(v) >= 2 }))
		}, []kv{stream.KV("b", "22"), stream.KV("c", "333")}},
		{"filter-not", func(s stream.Stream[string, string]) {
			out(operators.FilterNot(s, func(_, v string) bool { return len(v) >= 2 }))
		}, []kv{stream.KV("a", "1"), stream.KV("d", "")}},
		{"flat-map-values", func(s stream.Stream[string, string]) {
			out(operators.FlatMapValues(s, func(v string) []string { return strings.Split(v, "") }))
		}, []kv{stream.KV("a", "1"), stream.KV("b", "2"), stream.KV("b", "2"), stream.KV("c", "3"), stream.KV("c", "3"), stream.KV("c", "3")}},
		{"flat-map", func(s stream.Stream[string, string]) {
			out(operators.FlatMap(s, func(k, v string) []kv {
				if v == "" {
					return nil
				}
				return []kv{stream.KV(k, v), stream.KV(k+k, v+v)}
			}))
		}, []kv{stream.KV("a", "1"), stream.KV("aa", "11"), stream.KV("b", "22"), stream.KV("bb", "2222"), stream.KV("c", "333"), stream.KV("cc", "333333")}},
		{"merge keeps each input's order", func(s stream.Stream[string, string]) {
			short := operators.Filter(s, func(_, v string) bool { return len(v) < 2 })
			long := operators.MapValues(operators.Filter(s, func(_, v string) bool { return len(v) >= 2 }), strings.ToUpper)
			out(operators.Merge(long, short))
		}, []kv{stream.KV("a", "1"), stream.KV("b", "22"), stream.KV("c", "333"), stream.KV("d", "")}},
		{"fan-out delivers in the order consumers were added", func(s stream.Stream[string, string]) {
			out(operators.MapValues(s, func(v string) string { return "x" + v }))
			out(operators.MapValues(s, func(v string) string { return "y" + v }))
		}, []kv{stream.KV("a", "x1"), stream.KV("a", "y1"), stream.KV("b", "x22"), stream.KV("b", "y22"), stream.KV("c", "x333"), stream.KV("c", "y333"), stream.KV("d", "x"), stream.KV("d", "y")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := run(t, tc.build, input, "out")["out"]
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestBranchFirstMatchWinsAndUnmatchedDrop(t *testing.T) {
	got := run(t, func(s stream.Stream[string, string]) {
		b := operators.Branch(s,
			func(_, v string) bool { return strings.HasPrefix(v, "err") },
			func(_, v string) bool { return strings.HasPrefix(v, "e") },
		)
		stream.Output(b[0], "errors", serde.String, serde.String)
		stream.Output(b[1], "es", serde.String, serde.String)
	}, []kv{stream.KV("1", "error"), stream.KV("2", "event"), stream.KV("3", "other"), stream.KV("4", "err")}, "errors", "es")
	if want := []kv{stream.KV("1", "error"), stream.KV("4", "err")}; !slices.Equal(got["errors"], want) {
		t.Errorf("errors: got %v, want %v", got["errors"], want)
	}
	if want := []kv{stream.KV("2", "event")}; !slices.Equal(got["es"], want) {
		t.Errorf("es: got %v, want %v", got["es"], want)
	}
}

func TestPeekSeesEveryRecord(t *testing.T) {
	var seen []string
	run(t, func(s stream.Stream[string, string]) {
		out(operators.Peek(s, func(k, _ string) { seen = append(seen, k) }))
	}, []kv{stream.KV("a", "1"), stream.KV("b", "2")}, "out")
	if !slices.Equal(seen, []string{"a", "b"}) {
		t.Errorf("peek saw %v", seen)
	}
}

// counter is a custom processor with per-task state: it numbers records.
type counter struct {
	next stream.Processor[string, string]
	n    int
}

func (c *counter) Process(ctx stream.Context, r stream.Record[string, string]) error {
	c.n++
	r.Value = fmt.Sprintf("%s#%d@%s", r.Value, c.n, ctx.TaskID())
	return c.next.Process(ctx, r)
}

func TestProcessKeepsStatePerTask(t *testing.T) {
	job := stream.NewJob("test")
	in := stream.Input(job, "in", serde.String, serde.String)
	numbered := operators.Process(in, func(next stream.Processor[string, string]) stream.Processor[string, string] {
		return &counter{next: next}
	})
	stream.Output(numbered, "out", serde.String, serde.String)
	d, err := runnertest.New(job, runnertest.Partitions("in", 2), runnertest.Partitions("out", 2))
	if err != nil {
		t.Fatal(err)
	}
	pin := runnertest.NewInput(d, "in", serde.String, serde.String)
	for i, p := range []int32{0, 1, 0, 0, 1} {
		if err := pin.Pipe("k", fmt.Sprint(i), runnertest.ToPartition(p)); err != nil {
			t.Fatal(err)
		}
	}
	// Key "k" hashes to one output partition; read everything.
	kvs, err := runnertest.NewOutput(d, "out", serde.String, serde.String).KeyValues()
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, r := range kvs {
		vals = append(vals, r.Value)
	}
	want := []string{"0#1@0_0", "1#1@0_1", "2#2@0_0", "3#3@0_0", "4#2@0_1"}
	if !slices.Equal(vals, want) {
		t.Errorf("got %v, want %v", vals, want)
	}
}

func TestRecordMetadataSurvivesOperators(t *testing.T) {
	job := stream.NewJob("test")
	in := stream.Input(job, "in", serde.String, serde.String)
	stream.Output(operators.MapValues(operators.Filter(in, func(string, string) bool { return true }), strings.ToUpper), "out", serde.String, serde.String)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h := stream.Header{Key: "trace", Value: []byte("t1")}
	if err := runnertest.NewInput(d, "in", serde.String, serde.String).Pipe("k", "v", runnertest.At(ts), runnertest.WithHeaders(h)); err != nil {
		t.Fatal(err)
	}
	recs := d.AllRecords("out")
	if len(recs) != 1 {
		t.Fatalf("got %d records", len(recs))
	}
	r := recs[0]
	if !r.Timestamp.Equal(ts) || len(r.Headers) != 1 || r.Headers[0].Key != "trace" || string(r.Value) != "V" {
		t.Errorf("got %+v", r)
	}
}

func TestProcessorErrorNamesTheRecord(t *testing.T) {
	job := stream.NewJob("test")
	in := stream.Input(job, "in", serde.String, serde.String)
	boom := errors.New("boom")
	failing := operators.Process(in, func(next stream.Processor[string, string]) stream.Processor[string, string] {
		return stream.ProcessorFunc[string, string](func(ctx stream.Context, r stream.Record[string, string]) error {
			if r.Value == "bad" {
				return boom
			}
			return next.Process(ctx, r)
		})
	})
	out(failing)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	pin := runnertest.NewInput(d, "in", serde.String, serde.String)
	if err := pin.Pipe("k", "good"); err != nil {
		t.Fatal(err)
	}
	err = pin.Pipe("k", "bad")
	var perr *stream.ProcessError
	if !errors.As(err, &perr) || !errors.Is(err, boom) || perr.Topic != "in" || perr.Offset != 1 {
		t.Fatalf("got %v", err)
	}
}

func TestPanicBecomesError(t *testing.T) {
	job := stream.NewJob("test")
	in := stream.Input(job, "in", serde.String, serde.String)
	out(operators.MapValues(in, func(v string) string {
		if v == "bad" {
			panic("mapper bug")
		}
		return v
	}))
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	err = runnertest.NewInput(d, "in", serde.String, serde.String).Pipe("k", "bad")
	var perr *stream.ProcessError
	if !errors.As(err, &perr) || !strings.Contains(err.Error(), "mapper bug") || !strings.Contains(err.Error(), "in/0@0") {
		t.Fatalf("got %v", err)
	}
}

func TestDeserializeErrorNamesTheRecord(t *testing.T) {
	job := stream.NewJob("test")
	in := stream.Input(job, "in", serde.String, serde.Int64)
	stream.Output(in, "out", serde.String, serde.Int64)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Pipe("in", stream.RawRecord{Key: []byte("k"), Value: []byte("abc")})
	var derr *stream.DeserializeError
	if !errors.As(err, &derr) || derr.Topic != "in" || derr.Partition != 0 || derr.Offset != 0 || derr.Field != "value" {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "in/0@0") {
		t.Errorf("message does not locate the record: %v", err)
	}
}
