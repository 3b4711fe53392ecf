package operators_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/state/window"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// TestWindows runs the scripts in testdata/windows: input records with
// timestamps in, the windowed operator's output out. Commands:
//
//	job op=(tumbling|hopping|session|dedupe) [agg=(count|reduce|aggregate)]
//	    [size=D] [advance=D] [gap=D] [grace=D] [retention=D] [within=D]
//	    [final] [partitions=N]
//	  builds a job reading topic "in" (string keys and values), grouped by
//	  key, through the operator, to "out". reduce joins values with ",";
//	  aggregate concatenates them, and merges sessions with "|"; dedupe
//	  dedupes by key.
//	pipe
//	  <key> <value> @<ms> [p=<partition>]
//	  pipes records in order and prints what "out" got since the last
//	  print: <key> [<start>,<end>) <value|deleted> @<ms> for time windows,
//	  [<start>,<end>] for sessions, <key> <value> @<ms> for dedupe.
//	dropped
//	  prints the drops counted so far, by reason.
//	store [p=N]
//	  prints what the operator's store holds in partition N (default 0).
//	changelog [p=N]
//	  prints the store's changelog records written since the last print.
func TestWindows(t *testing.T) {
	datadriven.Walk(t, "testdata/windows", func(t *testing.T, path string) {
		var h *windowHarness
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			switch td.Cmd {
			case "job":
				h = newWindowHarness(t, td)
				return ""
			case "pipe":
				return h.pipe(t, td)
			case "dropped":
				return h.dropped()
			case "store":
				return h.store(t, td)
			case "changelog":
				return h.changelog(t, td)
			default:
				t.Fatalf("%s: unknown command %q", td.Pos, td.Cmd)
				return ""
			}
		})
		if h != nil {
			if err := h.d.Close(); err != nil {
				t.Error(err)
			}
		}
	})
}

type windowHarness struct {
	d        *runnertest.Driver
	op       string
	parts    int32
	printed  map[int32]int // records of "out" printed, by partition
	logged   map[int32]int // changelog records printed, by partition
	sessions bool
	format   func(r stream.RawRecord) string
}

const windowStore = "w"

func durArg(t *testing.T, td *datadriven.TestData, name string) time.Duration {
	t.Helper()
	if !td.HasArg(name) {
		return 0
	}
	var s string
	td.ScanArgs(t, name, &s)
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %s=%s: %v", td.Pos, name, s, err)
	}
	return d
}

func newWindowHarness(t *testing.T, td *datadriven.TestData) *windowHarness {
	h := &windowHarness{parts: 1, printed: map[int32]int{}, logged: map[int32]int{}}
	td.ScanArgs(t, "op", &h.op)
	agg := "count"
	if td.HasArg("agg") {
		td.ScanArgs(t, "agg", &agg)
	}
	if td.HasArg("partitions") {
		var n int
		td.ScanArgs(t, "partitions", &n)
		h.parts = int32(n)
	}
	size, advance, gap := durArg(t, td, "size"), durArg(t, td, "advance"), durArg(t, td, "gap")
	grace, retention := durArg(t, td, "grace"), durArg(t, td, "retention")
	final := td.HasArg("final")

	job := stream.NewJob("win")
	in := stream.Input(job, "in", serde.String, serde.String)
	g := operators.GroupByKey(in, serde.String, serde.String)
	concat := func(_ string, v, acc string) string { return acc + v }
	join := func(acc, v string) string { return acc + "," + v }
	switch h.op {
	case "tumbling", "hopping":
		w := operators.Tumbling(size)
		if h.op == "hopping" {
			w = operators.Hopping(size, advance)
		}
		w = w.WithGrace(grace).WithRetention(retention)
		if final {
			w = w.EmitFinal()
		}
		switch agg {
		case "count":
			writeWindowed(operators.WindowedCount(g, windowStore, w), serde.Int64)
		case "reduce":
			writeWindowed(operators.WindowedReduce(g, windowStore, w, join), serde.String)
		case "aggregate":
			writeWindowed(operators.WindowedAggregate(g, windowStore, w, func() string { return "" }, concat, serde.String), serde.String)
		}
	case "session":
		h.sessions = true
		w := operators.Sessions(gap).WithGrace(grace).WithRetention(retention)
		if final {
			w = w.EmitFinal()
		}
		switch agg {
		case "count":
			writeWindowed(operators.SessionCount(g, windowStore, w), serde.Int64)
		case "reduce":
			writeWindowed(operators.SessionReduce(g, windowStore, w, join), serde.String)
		case "aggregate":
			merge := func(_ string, a, b string) string { return a + "|" + b }
			writeWindowed(operators.SessionAggregate(g, windowStore, w, func() string { return "" }, concat, merge, serde.String), serde.String)
		}
	case "dedupe":
		stream.Output(operators.Dedupe(in, windowStore, durArg(t, td, "within"), serde.String), "out", serde.String, serde.String)
	default:
		t.Fatalf("%s: unknown op %q", td.Pos, h.op)
	}
	d, err := runnertest.New(job, runnertest.Partitions("in", h.parts), runnertest.Partitions("out", h.parts))
	if err != nil {
		t.Fatalf("%s: %v", td.Pos, err)
	}
	h.d = d
	return h
}

// writeWindowed writes a windowed table's changes to "out": the key with
// its window, the value as text (a deletion as "deleted").
func writeWindowed[A any](t stream.Table[stream.Windowed[string], A], agg serde.Serde[A]) {
	text := serde.Funcs(func(c stream.Change[A]) ([]byte, error) {
		if c.Deleted {
			return []byte("deleted"), nil
		}
		b, err := agg.Encode(c.Value)
		if n, ok := any(c.Value).(int64); ok {
			b = strconv.AppendInt(nil, n, 10)
		}
		return b, err
	}, func([]byte) (stream.Change[A], error) { panic("unused") })
	stream.Output(t.Changes(), "out", t.KeySerde(), text)
}

func (h *windowHarness) pipe(t *testing.T, td *datadriven.TestData) string {
	in := runnertest.NewInput(h.d, "in", serde.String, serde.String)
	for line := range strings.Lines(td.Input) {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasPrefix(f[2], "@") {
			t.Fatalf("%s: want <key> <value> @<ms> [p=N], got %q", td.Pos, line)
		}
		at, err := strconv.ParseInt(f[2][1:], 10, 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", td.Pos, line, err)
		}
		opts := []runnertest.RecordOption{runnertest.At(time.UnixMilli(at))}
		if len(f) > 3 {
			p, err := strconv.ParseInt(strings.TrimPrefix(f[3], "p="), 10, 32)
			if err != nil {
				t.Fatalf("%s: %q: %v", td.Pos, line, err)
			}
			opts = append(opts, runnertest.ToPartition(int32(p)))
		}
		if err := in.Pipe(f[0], f[1], opts...); err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
	}
	return h.newOutput(t)
}

func (h *windowHarness) newOutput(t *testing.T) string {
	var sb strings.Builder
	for p := range h.parts {
		recs := h.d.Records("out", p)
		for _, r := range recs[h.printed[p]:] {
			if h.parts > 1 {
				fmt.Fprintf(&sb, "p%d: ", p)
			}
			sb.WriteString(h.show(t, r))
			sb.WriteByte('\n')
		}
		h.printed[p] = len(recs)
	}
	return sb.String()
}

func (h *windowHarness) show(t *testing.T, r stream.RawRecord) string {
	if h.op == "dedupe" {
		return fmt.Sprintf("%s %s @%d", r.Key, r.Value, r.Timestamp.UnixMilli())
	}
	wk, err := stream.WindowedSerde(serde.String).Decode(r.Key)
	if err != nil {
		t.Fatalf("out key %x: %v", r.Key, err)
	}
	closing := ")"
	if h.sessions {
		closing = "]"
	}
	return fmt.Sprintf("%s [%d,%d%s %s @%d", wk.Key, wk.Window.Start.UnixMilli(), wk.Window.End.UnixMilli(), closing, r.Value, r.Timestamp.UnixMilli())
}

func (h *windowHarness) dropped() string {
	var sb strings.Builder
	drops := h.d.Dropped()
	for _, reason := range slices.Sorted(maps.Keys(drops)) {
		fmt.Fprintf(&sb, "%s: %d\n", reason, drops[reason])
	}
	return sb.String()
}

func partitionArg(t *testing.T, td *datadriven.TestData) int32 {
	var p int
	if td.HasArg("p") {
		td.ScanArgs(t, "p", &p)
	}
	return int32(p)
}

// store prints the operator's store, decoded per its layout.
func (h *windowHarness) store(t *testing.T, td *datadriven.TestData) string {
	s := h.d.Store(windowStore, partitionArg(t, td))
	if s == nil {
		return "no task yet\n"
	}
	it := s.Range(nil, nil)
	defer it.Close()
	var sb strings.Builder
	for it.Next() {
		sb.WriteString(h.storeKey(t, it.Key()))
		sb.WriteByte('\n')
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if sb.Len() == 0 {
		return "empty\n"
	}
	return sb.String()
}

func (h *windowHarness) storeKey(t *testing.T, k []byte) string {
	switch {
	case h.op == "dedupe" && k[0] == 'i':
		return "id " + string(k[1:])
	case h.op == "dedupe":
		return fmt.Sprintf("expiry @%d %s", window.Time(k[1:]), k[1+window.TimeLen:])
	case h.sessions && k[0] == 0x01:
		key, start, end, err := window.SplitKeyIndexKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("by key: %s [%d,%d]", key, start, end)
	case h.sessions:
		key, start, end, err := window.SplitEndIndexKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("by end: %s [%d,%d]", key, start, end)
	default:
		start, key, err := window.SplitFixedKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s @%d", key, start)
	}
}

// changelog prints the changelog records written since the last print.
func (h *windowHarness) changelog(t *testing.T, td *datadriven.TestData) string {
	p := partitionArg(t, td)
	recs := h.d.Records("win-"+windowStore+"-changelog", p)
	var sb strings.Builder
	for _, r := range recs[h.logged[p]:] {
		what := "put"
		if r.Value == nil {
			what = "tombstone"
		}
		fmt.Fprintf(&sb, "%s %s\n", what, h.storeKey(t, r.Key))
	}
	h.logged[p] = len(recs)
	if sb.Len() == 0 {
		return "nothing\n"
	}
	return sb.String()
}

func TestWindowSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(g operators.Grouped[string, string], in stream.Stream[string, string])
		want  string
	}{
		{"zero size", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.WindowedCount(g, "w", operators.Tumbling(0))
		}, "window size 0s"},
		{"sub-millisecond size", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.WindowedCount(g, "w", operators.Tumbling(1500*time.Microsecond))
		}, "window size 1.5ms"},
		{"advance over size", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.WindowedCount(g, "w", operators.Hopping(time.Second, 2*time.Second))
		}, "window advance 2s"},
		{"negative grace", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.WindowedCount(g, "w", operators.Tumbling(time.Second).WithGrace(-time.Second))
		}, "grace -1s"},
		{"short retention", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.WindowedCount(g, "w", operators.Tumbling(time.Second).WithGrace(time.Second).WithRetention(time.Second))
		}, "at least size + grace (2s)"},
		{"zero gap", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.SessionCount(g, "w", operators.Sessions(0))
		}, "session gap 0s"},
		{"short session retention", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.SessionCount(g, "w", operators.Sessions(time.Second).WithRetention(time.Millisecond))
		}, "at least gap + grace (1s)"},
		{"no merge", func(g operators.Grouped[string, string], _ stream.Stream[string, string]) {
			operators.SessionAggregate(g, "w", operators.Sessions(time.Second), func() int64 { return 0 },
				func(string, string, int64) int64 { return 1 }, nil, serde.Int64)
		}, "init, add and merge are all needed"},
		{"zero dedupe span", func(_ operators.Grouped[string, string], in stream.Stream[string, string]) {
			operators.Dedupe(in, "w", 0, serde.String)
		}, "span 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := stream.NewJob("bad")
			in := stream.Input(job, "in", serde.String, serde.String)
			tc.build(operators.GroupByKey(in, serde.String, serde.String), in)
			_, err := job.Build()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"w"`) {
				t.Errorf("Build: %v; want an error naming the store and %q", err, tc.want)
			}
		})
	}
}

// failOnce fails the first record it sees for key boom.
type failOnce struct {
	next   stream.Processor[stream.Windowed[string], int64]
	failed bool
}

func (f *failOnce) Process(ctx stream.Context, r stream.Record[stream.Windowed[string], int64]) error {
	if r.Key.Key == "boom" && !f.failed {
		f.failed = true
		return fmt.Errorf("boom")
	}
	return f.next.Process(ctx, r)
}

// When the record whose stream time closes sessions fails after they were
// emitted, and is skipped, its effects are undone (the sessions are back
// in the store, stream time is back): the next record that moves stream
// time closes them again, and each result comes out once.
func TestSessionsCloseAgainAfterASkippedRecord(t *testing.T) {
	job := stream.NewJob("retry")
	in := stream.Input(job, "in", serde.String, serde.String)
	counts := operators.SessionCount(operators.GroupByKey(in, serde.String, serde.String), "w",
		operators.Sessions(10*time.Millisecond).EmitFinal())
	checked := operators.Process(counts.ToStream(), func(next stream.Processor[stream.Windowed[string], int64]) stream.Processor[stream.Windowed[string], int64] {
		return &failOnce{next: next}
	})
	stream.Output(checked, "out", stream.WindowedSerde(serde.String), serde.Int64)
	d, err := runnertest.New(job, runnertest.OnProcessError(stream.PolicySkip))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	input := runnertest.NewInput(d, "in", serde.String, serde.String)
	for _, r := range []struct {
		key string
		at  int64
	}{{"a", 1}, {"boom", 2}, {"x", 100}, {"y", 200}} {
		if err := input.Pipe(r.key, "v", runnertest.At(time.UnixMilli(r.at))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	recs, err := runnertest.NewOutput(d, "out", stream.WindowedSerde(serde.String), serde.Int64).Records()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s[%d]=%d", r.Key.Key, r.Key.Window.Start.UnixMilli(), r.Value))
	}
	slices.Sort(got)
	// x's record failed and was skipped: x has no session; a and boom are
	// closed by y's record, once each.
	if want := []string{"a[1]=1", "boom[2]=1"}; !slices.Equal(got, want) {
		t.Errorf("results %q, want %q", got, want)
	}
	if n := len(d.BadRecords()); n != 1 {
		t.Errorf("%d records skipped, want 1", n)
	}
}

// Tools read window stores through the text formats the operators
// record: entries show as JSON, and parse back to the same bytes.
func TestWindowStoreFormats(t *testing.T) {
	job := stream.NewJob("fmt")
	in := stream.Input(job, "in", serde.String, serde.String)
	g := operators.GroupByKey(in, serde.String, serde.String)
	operators.WindowedCount(g, "fixed", operators.Tumbling(time.Minute))
	operators.SessionCount(g, "sessions", operators.Sessions(time.Minute))
	stream.Output(operators.Dedupe(in, "seen", time.Minute, serde.String), "out", serde.String, serde.String)
	topo, err := job.Build()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	for _, c := range []struct {
		store      string
		key, value []byte
		text       string
	}{
		{"fixed", window.FixedKey(nil, at, []byte("ann")), append(binary.BigEndian.AppendUint64(nil, uint64(at+5)), 0, 0, 0, 0, 0, 0, 0, 3),
			`{"key":"ann","start":"2024-05-01T12:00:00Z"} {"aggregate":3,"latest":"2024-05-01T12:00:00.005Z"}`},
		{"sessions", window.KeyIndexKey(nil, []byte("ann"), at, at+9), []byte{0, 0, 0, 0, 0, 0, 0, 2},
			`{"index":"by key","key":"ann","start":"2024-05-01T12:00:00Z","end":"2024-05-01T12:00:00.009Z"} {"aggregate":2}`},
		{"sessions", window.EndIndexKey(nil, []byte("ann"), at, at+9), []byte{},
			`{"index":"by end","key":"ann","start":"2024-05-01T12:00:00Z","end":"2024-05-01T12:00:00.009Z"} {}`},
		{"seen", append([]byte{'i'}, "e1"...), window.AppendTime(nil, at),
			`{"index":"id","id":"e1"} {"seen":"2024-05-01T12:00:00Z"}`},
		{"seen", append(window.AppendTime([]byte{'x'}, at), "e1"...), []byte{},
			`{"index":"expiry","id":"e1","seen":"2024-05-01T12:00:00Z"} {}`},
	} {
		kf, vf, ok := topo.StoreFormat(c.store)
		if !ok {
			t.Fatalf("store %s has no format", c.store)
		}
		ks, err1 := kf.Format(c.key)
		vs, err2 := vf.Format(c.value)
		if err := errors.Join(err1, err2); err != nil || ks+" "+vs != c.text {
			t.Errorf("%s: %s %s (%v), want %s", c.store, ks, vs, err, c.text)
			continue
		}
		kb, err1 := kf.Parse(ks)
		vb, err2 := vf.Parse(vs)
		if err := errors.Join(err1, err2); err != nil || !bytes.Equal(kb, c.key) || !bytes.Equal(vb, c.value) {
			t.Errorf("%s: %s %s parses to %x %x (%v), want %x %x", c.store, ks, vs, kb, vb, err, c.key, c.value)
		}
	}
}

// DedupeBy drops records whose extracted ID passed within the span,
// whatever their keys.
func TestDedupeBy(t *testing.T) {
	job := stream.NewJob("ids")
	in := stream.Input(job, "in", serde.String, serde.String)
	// The value is "<event id>:<payload>".
	id := func(_ string, v string) string { e, _, _ := strings.Cut(v, ":"); return e }
	stream.Output(operators.DedupeBy(in, "seen", 10*time.Millisecond, id, serde.String), "out", serde.String, serde.String)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	input := runnertest.NewInput(d, "in", serde.String, serde.String)
	for _, r := range []struct {
		k, v string
		at   int64
	}{{"a", "e1:x", 1}, {"b", "e1:retry", 3}, {"a", "e2:y", 4}, {"c", "e1:late", 12}, {"d", "e2:again", 9}} {
		if err := input.Pipe(r.k, r.v, runnertest.At(time.UnixMilli(r.at))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, r := range d.AllRecords("out") {
		got = append(got, string(r.Key)+"="+string(r.Value))
	}
	// e1 at 3 is within 10 of e1 at 1; at 12, 11 after it: a new event.
	// e2 at 9 is within 10 of e2 at 4.
	if want := "a=e1:x a=e2:y c=e1:late"; strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(got, " "), want)
	}
}
