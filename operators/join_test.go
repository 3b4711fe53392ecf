package operators_test

import (
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
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// TestJoins runs the join scripts in testdata/join: input records with
// timestamps in, the join's output records out. Commands:
//
//	job kind=(stream-table|stream-stream|table-table|global) type=(inner|left|outer)
//	    [before=D after=D grace=D] [partitions=N]
//	  builds a job: topic "left" (a stream, or a table for table-table)
//	  joined with topic "right" (a table, a stream, a table or a global
//	  table), written to "out". Keys and values are strings; the joiner
//	  writes "l+r", "-" standing for a missing side. The global join looks
//	  "right" up by the part of the left value before its first ':'.
//	pipe
//	  <topic> <key> <value|nil> @<ms> [p=<partition>]
//	  pipes records in order (nil: a tombstone) and prints what "out" got:
//	  <key> <value|deleted> @<ms> (p<partition>)
//	dropped
//	  prints the drops counted so far, by reason.
//	buffers
//	  prints how many entries of each kind the stream-stream join's store
//	  holds in partition 0.
func TestJoins(t *testing.T) {
	datadriven.Walk(t, "testdata/join", func(t *testing.T, path string) {
		var h *joinHarness
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			switch td.Cmd {
			case "job":
				h = newJoinHarness(t, td)
				return ""
			case "pipe":
				return h.pipe(t, td.Input)
			case "dropped":
				return h.dropped()
			case "buffers":
				return h.buffers(t)
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

type joinHarness struct {
	d       *runnertest.Driver
	printed map[int32]int // records of "out" printed, by partition
	parts   int32
}

func joinName(lok bool, l string, rok bool, r string) string {
	if !lok {
		l = "-"
	}
	if !rok {
		r = "-"
	}
	return l + "+" + r
}

func newJoinHarness(t *testing.T, td *datadriven.TestData) *joinHarness {
	var kind, typ string
	td.ScanArgs(t, "kind", &kind)
	td.ScanArgs(t, "type", &typ)
	parts := 1
	td.MaybeScanArgs(t, "partitions", &parts)
	dur := func(key string) time.Duration {
		var s string
		if !td.MaybeScanArgs(t, key, &s) {
			return 0
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s: %s=%s: %v", td.Pos, key, s, err)
		}
		return d
	}

	job := stream.NewJob("join-test")
	var out stream.Stream[string, string]
	switch kind {
	case "stream-table":
		left := stream.Input(job, "left", serde.String, serde.String)
		right := stream.TableInput(job, "right", serde.String, serde.String)
		switch typ {
		case "inner":
			out = operators.JoinTable(left, right, func(_, l, r string) string { return joinName(true, l, true, r) })
		case "left":
			out = operators.LeftJoinTable(left, right, func(_, l, r string, ok bool) string { return joinName(true, l, ok, r) })
		}
	case "stream-stream":
		left := stream.Input(job, "left", serde.String, serde.String)
		right := stream.Input(job, "right", serde.String, serde.String)
		w := operators.JoinWindows{Before: dur("before"), After: dur("after"), Grace: dur("grace")}
		b := operators.Buffers("buffers", serde.String, serde.String, serde.String)
		switch typ {
		case "inner":
			out = operators.Join(left, right, w, b, func(_, l, r string) string { return joinName(true, l, true, r) })
		case "left":
			out = operators.LeftJoin(left, right, w, b, func(_, l, r string, ok bool) string { return joinName(true, l, ok, r) })
		case "outer":
			out = operators.OuterJoin(left, right, w, b, joinName4)
		}
	case "table-table":
		left := stream.TableInput(job, "left", serde.String, serde.String)
		right := stream.TableInput(job, "right", serde.String, serde.String)
		var res stream.Table[string, string]
		switch typ {
		case "inner":
			res = operators.JoinTables(left, right, "result", func(_, l, r string) string { return joinName(true, l, true, r) }, serde.String)
		case "left":
			res = operators.LeftJoinTables(left, right, "result", func(_, l, r string, ok bool) string { return joinName(true, l, ok, r) }, serde.String)
		case "outer":
			res = operators.OuterJoinTables(left, right, "result", joinName4, serde.String)
		}
		if res.Store() != "" {
			stream.OutputTable(res, "out", serde.String, serde.String)
		}
	case "global":
		left := stream.Input(job, "left", serde.String, serde.String)
		right := stream.GlobalTableInput(job, "right", serde.String, serde.String)
		keyOf := func(_, v string) string { k, _, _ := strings.Cut(v, ":"); return k }
		switch typ {
		case "inner":
			out = operators.JoinGlobal(left, right, keyOf, func(_, l, r string) string { return joinName(true, l, true, r) })
		case "left":
			out = operators.LeftJoinGlobal(left, right, keyOf, func(_, l, r string, ok bool) string { return joinName(true, l, ok, r) })
		}
	default:
		t.Fatalf("%s: unknown kind %q", td.Pos, kind)
	}
	if kind != "table-table" {
		if out == (stream.Stream[string, string]{}) {
			t.Fatalf("%s: kind %s has no type %q", td.Pos, kind, typ)
		}
		stream.Output(out, "out", serde.String, serde.String)
	}
	var opts []runnertest.Option
	for _, topic := range []string{"left", "right", "out"} {
		if kind == "global" && topic == "right" {
			continue
		}
		opts = append(opts, runnertest.Partitions(topic, int32(parts)))
	}
	d, err := runnertest.New(job, opts...)
	if err != nil {
		t.Fatalf("%s: %v", td.Pos, err)
	}
	return &joinHarness{d: d, printed: map[int32]int{}, parts: int32(parts)}
}

func joinName4(_, l string, lok bool, r string, rok bool) string { return joinName(lok, l, rok, r) }

func (h *joinHarness) pipe(t *testing.T, input string) string {
	for _, line := range strings.Split(input, "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[3], "@") {
			t.Fatalf("pipe %q: want <topic> <key> <value|nil> @<ms> [p=<partition>]", line)
		}
		ms, err := strconv.ParseInt(f[3][1:], 10, 64)
		if err != nil {
			t.Fatalf("pipe %q: %v", line, err)
		}
		rec := stream.RawRecord{Key: []byte(f[1]), Timestamp: time.UnixMilli(ms)}
		if f[2] != "nil" {
			rec.Value = []byte(f[2])
		}
		rec.Partition = h.d.PartitionFor(f[0], rec.Key)
		if len(f) > 4 {
			p, err := strconv.Atoi(strings.TrimPrefix(f[4], "p="))
			if err != nil {
				t.Fatalf("pipe %q: %v", line, err)
			}
			rec.Partition = int32(p)
		}
		if err := h.d.Pipe(f[0], rec); err != nil {
			return "error: " + err.Error()
		}
	}
	var sb strings.Builder
	for p := range h.parts {
		recs := h.d.Records("out", p)
		for _, r := range recs[h.printed[p]:] {
			v := string(r.Value)
			if r.Value == nil {
				v = "deleted"
			}
			fmt.Fprintf(&sb, "%s %s @%d", r.Key, v, r.Timestamp.UnixMilli())
			if h.parts > 1 {
				fmt.Fprintf(&sb, " (p%d)", p)
			}
			sb.WriteByte('\n')
		}
		h.printed[p] = len(recs)
	}
	return sb.String()
}

func (h *joinHarness) dropped() string {
	var sb strings.Builder
	dropped := h.d.Dropped()
	for _, reason := range slices.Sorted(maps.Keys(dropped)) {
		fmt.Fprintf(&sb, "%s: %d\n", reason, dropped[reason])
	}
	return sb.String()
}

// buffers counts the entries of the stream-stream join's store by kind,
// from the first byte of their keys (see operators/windowjoin.go).
func (h *joinHarness) buffers(t *testing.T) string {
	s := h.d.Store("buffers", 0)
	if s == nil {
		return "no store\n"
	}
	counts := map[byte]int{}
	it := s.Range(nil, nil)
	for it.Next() {
		counts[it.Key()[0]]++
	}
	if err := errors.Join(it.Err(), it.Close()); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("left %d (index %d), right %d (index %d), unjoined %d\n",
		counts[0x10], counts[0x11], counts[0x20], counts[0x21], counts[0x30])
}
