package runnertest_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// countJob counts int64 values per key in store "counts" and, for each
// record, emits its new count to "counts" and then, for keys starting
// with "boom", fails: after writing the store and emitting. A value of
// 666 panics instead. So a failed record has effects to undo.
func countJob(failWith error) *stream.Job {
	job := stream.NewJob("policy")
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
			r.Value = n + 1
			if err := next.Process(ctx, r); err != nil {
				return err
			}
			if r.Value == 666 {
				panic("the number of the beast")
			}
			if strings.HasPrefix(r.Key, "boom") {
				return failWith
			}
			return nil
		})
	}, stream.WithStores(stream.StoreSpec{Name: "counts"}))
	stream.Output(out, "counts", serde.String, serde.Int64)
	return job
}

func int64Bytes(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

// pipeAll pipes key=value records to "in" partition 0 and returns the
// first error.
func pipeAll(t *testing.T, d *runnertest.Driver, recs ...stream.RawRecord) error {
	t.Helper()
	for _, r := range recs {
		if err := d.Pipe("in", r); err != nil {
			return err
		}
	}
	return nil
}

func rec(key string, value []byte) stream.RawRecord {
	return stream.RawRecord{Key: []byte(key), Value: value}
}

func storeCount(t *testing.T, d *runnertest.Driver, key string) int64 {
	t.Helper()
	s := d.Store("counts", 0)
	if s == nil {
		return 0
	}
	v, err := s.Get([]byte(key))
	if errors.Is(err, stream.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return int64(binary.BigEndian.Uint64(v))
}

func TestFailPolicyStopsAtTheRecordAndUndoesIt(t *testing.T) {
	d, err := runnertest.New(countJob(errors.New("kaput")))
	if err != nil {
		t.Fatal(err)
	}
	err = pipeAll(t, d, rec("a", int64Bytes(1)), rec("boom", int64Bytes(2)))
	var perr *stream.ProcessError
	if !errors.As(err, &perr) || perr.Topic != "in" || perr.Partition != 0 || perr.Offset != 1 {
		t.Fatalf("error %v, want a ProcessError at in/0@1", err)
	}
	if !strings.Contains(err.Error(), "in/0@1") || !strings.Contains(err.Error(), "kaput") {
		t.Errorf("error %q does not name the record and the cause", err)
	}
	// The failed record wrote its count and emitted it, then failed:
	// neither may remain, or a restart (which processes it again) would
	// count it twice.
	if n := storeCount(t, d, "boom"); n != 0 {
		t.Errorf("store holds boom=%d after the record failed, want nothing", n)
	}
	if got := d.AllRecords("counts"); len(got) != 1 || string(got[0].Key) != "a" {
		t.Errorf("outputs %v, want only a's", got)
	}
	if n := len(d.AllRecords("policy-counts-changelog")); n != 1 {
		t.Errorf("changelog has %d records, want 1 (a's)", n)
	}
}

func TestSkipPolicy(t *testing.T) {
	job := countJob(errors.New("kaput"))
	job.OnProcessError(stream.PolicySkip)
	d, err := runnertest.New(job, runnertest.OnDeserializeError(stream.PolicySkip))
	if err != nil {
		t.Fatal(err)
	}
	err = pipeAll(t, d,
		rec("a", int64Bytes(1)),
		rec("boom", int64Bytes(2)),         // fails after its effects
		rec("a", []byte("not 8 bytes")),    // does not decode
		stream.RawRecord{Key: []byte("a")}, // a null value does not decode as int64
		rec("a", int64Bytes(3)),
		rec("boom", int64Bytes(4)),
	)
	if err != nil {
		t.Fatalf("a skipped record stopped the job: %v", err)
	}
	if a, boom := storeCount(t, d, "a"), storeCount(t, d, "boom"); a != 2 || boom != 0 {
		t.Errorf("counts a=%d boom=%d, want 2 and 0", a, boom)
	}
	var kinds []string
	for _, b := range d.BadRecords() {
		kinds = append(kinds, fmt.Sprintf("%s@%d:%s", b.Kind, b.Record.Offset, b.Policy))
	}
	if got := strings.Join(kinds, " "); got != "process@1:skip deserialize@2:skip deserialize@3:skip process@5:skip" {
		t.Errorf("bad records %s", got)
	}
	out, err := runnertest.NewOutput(d, "counts", serde.String, serde.Int64).KeyValues()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out) != "[{a 1} {a 2}]" {
		t.Errorf("outputs %v: a skipped record's outputs were written", out)
	}
	if n := len(d.AllRecords(d.Topology().DeadLetterTopic())); n != 0 {
		t.Errorf("skip wrote %d dead letters", n)
	}
}

func TestDeadLetterPolicy(t *testing.T) {
	job := countJob(errors.New("kaput"))
	d, err := runnertest.New(job,
		runnertest.Partitions("in", 3),
		runnertest.OnDeserializeError(stream.PolicyDeadLetter),
		runnertest.OnProcessError(stream.PolicyDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_123)
	bad := stream.RawRecord{Key: []byte("k"), Value: []byte("xyz"), Timestamp: at, Partition: 2,
		Headers: []stream.Header{{Key: "trace", Value: []byte("t1")}, {Key: stream.HeaderDLQError, Value: []byte("an old error")}}}
	if err := d.Pipe("in", bad); err != nil {
		t.Fatal(err)
	}
	if err := d.Pipe("in", stream.RawRecord{Key: []byte("boom"), Value: int64Bytes(1), Timestamp: at, Partition: 1}); err != nil {
		t.Fatal(err)
	}
	dlq := d.Topology().DeadLetterTopic()
	if dlq != "policy-dlq" {
		t.Fatalf("dead-letter topic %q", dlq)
	}
	// One dead-letter partition per input partition number.
	got := d.Records(dlq, 2)
	if len(got) != 1 || len(d.Records(dlq, 1)) != 1 || len(d.Records(dlq, 0)) != 0 {
		t.Fatalf("dead letters by partition: %d %d %d, want 0 1 1", len(d.Records(dlq, 0)), len(d.Records(dlq, 1)), len(got))
	}
	dl := got[0]
	if string(dl.Key) != "k" || string(dl.Value) != "xyz" || !dl.Timestamp.Equal(at) {
		t.Errorf("dead letter %q=%q at %s: not the record as read", dl.Key, dl.Value, dl.Timestamp)
	}
	info, err := stream.ParseDeadLetter(dl.Headers)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != stream.KindDeserialize || info.Topic != "in" || info.Partition != 2 || info.Offset != 0 ||
		!info.Timestamp.Equal(at) || info.Task != "0_2" || !strings.Contains(info.Error, "int64 needs 8 bytes") {
		t.Errorf("dead letter says %+v", info)
	}
	if len(info.Headers) != 1 || info.Headers[0].Key != "trace" {
		t.Errorf("the record's own headers: %v, want trace only (old dead-letter headers replaced)", info.Headers)
	}
	proc, err := stream.ParseDeadLetter(d.Records(dlq, 1)[0].Headers)
	if err != nil || proc.Kind != stream.KindProcess || !strings.Contains(proc.Error, "kaput") || proc.Stack != "" {
		t.Errorf("process dead letter: %+v, %v", proc, err)
	}
	if n := storeCount(t, d, "boom"); n != 0 {
		t.Errorf("a dead-lettered record left boom=%d in the store", n)
	}
	if n := len(d.AllRecords("counts")); n != 0 {
		t.Errorf("a dead-lettered record left %d outputs", n)
	}
}

func TestPanicsFollowTheProcessPolicy(t *testing.T) {
	d, err := runnertest.New(countJob(nil), runnertest.OnProcessError(stream.PolicyDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	for range 666 {
		if err := d.Pipe("in", rec("x", int64Bytes(0))); err != nil {
			t.Fatal(err)
		}
	}
	if n := storeCount(t, d, "x"); n != 665 {
		t.Errorf("count %d after the panicking record, want 665 (its write undone)", n)
	}
	dl := d.AllRecords("policy-dlq")
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	info, err := stream.ParseDeadLetter(dl[0].Headers)
	if err != nil || !strings.Contains(info.Error, "panic: the number of the beast") || !strings.Contains(info.Stack, "goroutine") {
		t.Errorf("dead letter of a panic: %+v, %v", info, err)
	}

	// Under fail, the panic is an error naming the record.
	d, _ = runnertest.New(countJob(nil))
	for i := range 666 {
		err = d.Pipe("in", rec("x", int64Bytes(0)))
		if i < 665 && err != nil {
			t.Fatal(err)
		}
	}
	var pe *stream.PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "in/0@665") {
		t.Errorf("panic under fail: %v", err)
	}
}

func TestFatalErrorsIgnoreThePolicy(t *testing.T) {
	d, err := runnertest.New(countJob(stream.Fatal(errors.New("database down"))),
		runnertest.OnProcessError(stream.PolicySkip))
	if err != nil {
		t.Fatal(err)
	}
	err = pipeAll(t, d, rec("boom", int64Bytes(1)))
	if !errors.Is(err, stream.ErrFatal) || !strings.Contains(err.Error(), "database down") {
		t.Fatalf("got %v, want the fatal error", err)
	}
	if len(d.BadRecords()) != 0 {
		t.Errorf("a fatal error was counted as skipped")
	}
}

func TestTimestamps(t *testing.T) {
	job := stream.NewJob("ts")
	stream.Output(stream.Input(job, "in", serde.String, serde.String), "out", serde.String, serde.String)

	// Negative: Kafka's "no timestamp" (-1) and anything before 1970 do
	// not decode; the deserialize policy decides.
	d, _ := runnertest.New(job)
	err := d.Pipe("in", stream.RawRecord{Value: []byte("v"), Timestamp: time.UnixMilli(-1)})
	var derr *stream.DeserializeError
	if !errors.As(err, &derr) || derr.Field != "timestamp" || !strings.Contains(err.Error(), "in/0@0") {
		t.Fatalf("negative timestamp: %v", err)
	}
	d, _ = runnertest.New(job, runnertest.OnDeserializeError(stream.PolicyDeadLetter))
	if err := d.Pipe("in", stream.RawRecord{Value: []byte("v"), Timestamp: time.UnixMilli(-1)}); err != nil {
		t.Fatal(err)
	}
	if dl := d.AllRecords("ts-dlq"); len(dl) != 1 || string(dl[0].Value) != "v" {
		t.Errorf("dead letters %v", dl)
	}

	// Far in the future: taken as it is. Stream time jumps there and
	// stays; outputs keep the timestamp.
	d, _ = runnertest.New(job)
	future := time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := d.Pipe("in", stream.RawRecord{Value: []byte("later"), Timestamp: future}); err != nil {
		t.Fatal(err)
	}
	if err := d.Pipe("in", stream.RawRecord{Value: []byte("now"), Timestamp: time.UnixMilli(1)}); err != nil {
		t.Fatal(err)
	}
	out := d.AllRecords("out")
	if len(out) != 2 || !out[0].Timestamp.Equal(future) || !out[1].Timestamp.Equal(time.UnixMilli(1)) {
		t.Errorf("outputs %v", out)
	}
}

// A processor emitting a record, or storing a value, larger than the
// topic accepts fails on that record, naming the topic and the record.
func TestRecordsTooLarge(t *testing.T) {
	job := stream.NewJob("big")
	in := stream.Input(job, "in", serde.String, serde.String)
	grow := operators.MapValues(in, func(v string) string { return strings.Repeat(v, 1000) })
	stream.Output(grow, "out", serde.String, serde.String)
	counts := operators.Reduce(operators.GroupByKey(grow, serde.String, serde.String), "longest", func(a, b string) string { return a + b })
	stream.Output(counts.ToStream(), "longest", serde.String, serde.String)

	d, err := runnertest.New(job, runnertest.MaxMessageBytes("out", 2000), runnertest.MaxMessageBytes("longest", 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Pipe("in", rec("k", []byte("a"))); err != nil {
		t.Fatalf("1,000 bytes: %v", err)
	}
	err = d.Pipe("in", rec("k", []byte("bbb")))
	var tooLarge *stream.RecordTooLargeError
	if !errors.As(err, &tooLarge) || tooLarge.Topic != "out" || tooLarge.Max != 2000 || !strings.Contains(err.Error(), "in/0@1") {
		t.Fatalf("3,000 bytes to a 2,000-byte topic: %v", err)
	}

	// A value its changelog could not hold fails at the Put.
	d, _ = runnertest.New(job, runnertest.MaxMessageBytes("big-longest-changelog", 1500),
		runnertest.OnProcessError(stream.PolicyDeadLetter))
	for _, v := range []string{"a", "b", "c"} {
		if err := d.Pipe("in", rec("k", []byte(v))); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.BadRecords(); len(got) != 2 || !errors.As(got[0].Err, &tooLarge) || tooLarge.Topic != "big-longest-changelog" {
		t.Fatalf("bad records %v", got)
	}
	v, err := d.Store("longest", 0).Get([]byte("k"))
	if err != nil || len(v) != 1000 {
		t.Errorf("store holds %d bytes, %v; want the first 1,000", len(v), err)
	}

	// A dead letter too large for the dead-letter topic stops the job:
	// the record cannot be put anywhere, and must not be lost.
	d, _ = runnertest.New(job, runnertest.MaxMessageBytes("out", 100), runnertest.MaxMessageBytes("big-dlq", 100),
		runnertest.OnProcessError(stream.PolicyDeadLetter))
	err = d.Pipe("in", rec("k", []byte("a")))
	if !errors.As(err, &tooLarge) || tooLarge.Topic != "big-dlq" || !strings.Contains(err.Error(), "in/0@0") {
		t.Fatalf("dead letter too large: %v", err)
	}
}

// wallTask stores each key's clicks and, at one minute of wall-clock time,
// marks the key "timed out" in its store and emits that; the timer of key
// "boom" fails after doing so.
type wallTask struct {
	store  stream.Store
	timers stream.Timers
}

func (w *wallTask) Init(ctx stream.Context) (err error) {
	if w.store, err = ctx.Store("seen"); err != nil {
		return err
	}
	w.timers, err = ctx.Timers("wall")
	return err
}

func (w *wallTask) Process(ctx stream.Context, rec stream.RawRecord) error {
	if err := w.store.Put(rec.Key, []byte("seen")); err != nil {
		return err
	}
	return w.timers.Set(stream.WallClockTimer, rec.Key, time.UnixMilli(60_000))
}

func (w *wallTask) OnTimer(ctx stream.Context, tm stream.Timer) error {
	if err := w.store.Put(tm.Key, []byte("timed out")); err != nil {
		return err
	}
	if err := ctx.Emit("timeouts", stream.RawRecord{Key: tm.Key, Value: []byte("timed out")}); err != nil {
		return err
	}
	if string(tm.Key) == "boom" {
		return errors.New("kaput")
	}
	return nil
}

// Wall-clock timers fire between records, as one: if one fails, the task
// stops and what the round's timers stored and emitted is undone, so the
// commit at shutdown holds none of it and the timers are still due.
func TestFailedWallClockTimersLeaveNothing(t *testing.T) {
	job := stream.NewJob("wall")
	stream.AddTask(job, stream.TaskSpec{
		Name: "wall", Inputs: []string{"clicks"}, Outputs: []string{"timeouts"},
		Stores: []stream.StoreSpec{{Name: "seen"}}, Timers: "wall",
		New: func() stream.Task { return new(wallTask) },
	})
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "boom"} {
		if err := d.Pipe("clicks", stream.RawRecord{Key: []byte(k), Value: []byte("click"), Timestamp: time.UnixMilli(1)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // still due after the failure: fails again
		if err := d.SetTime(time.UnixMilli(60_000)); err == nil || !strings.Contains(err.Error(), "kaput") {
			t.Fatalf("SetTime: %v, want the timer's error", err)
		}
		for _, k := range []string{"a", "boom"} {
			if v, err := d.Store("seen", 0).Get([]byte(k)); err != nil || string(v) != "seen" {
				t.Errorf("%s = %q, %v after the failed round; want seen", k, v, err)
			}
		}
		if n := len(d.AllRecords("timeouts")); n != 0 {
			t.Errorf("%d timeouts written by a failed round", n)
		}
	}
}
