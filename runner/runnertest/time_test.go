package runnertest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func ms(n int64) time.Time { return time.UnixMilli(n) }

// clockWatch records what a processor sees of time: the stream time and
// event time of each record, and the stream-time advances it is told of.
type clockWatch struct {
	next stream.Processor[string, string]
	log  *[]string
}

func (w *clockWatch) Process(ctx stream.Context, r stream.Record[string, string]) error {
	*w.log = append(*w.log, fmt.Sprintf("%s@%d/st%d", r.Value, r.Timestamp.UnixMilli(), ctx.StreamTime().UnixMilli()))
	return w.next.Process(ctx, r)
}

func (w *clockWatch) OnStreamTime(_ stream.Context, from, to time.Time) error {
	f := "0"
	if !from.IsZero() {
		f = fmt.Sprint(from.UnixMilli())
	}
	*w.log = append(*w.log, fmt.Sprintf("advance %s->%d", f, to.UnixMilli()))
	return nil
}

func TestEventTimeExtractor(t *testing.T) {
	var log []string
	job := stream.NewJob("clock")
	// The value is "<name>:<event time in ms>"; "-" keeps the Kafka timestamp.
	in := stream.Input(job, "in", serde.String, serde.String, stream.EventTime(func(_ string, v string) time.Time {
		_, at, _ := strings.Cut(v, ":")
		var n int64
		if _, err := fmt.Sscan(at, &n); err != nil {
			return time.Time{}
		}
		return ms(n)
	}))
	watched := operators.Process(in, func(next stream.Processor[string, string]) stream.Processor[string, string] {
		return &clockWatch{next: next, log: &log}
	})
	stream.Output(watched, "out", serde.String, serde.String)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	input := runnertest.NewInput(d, "in", serde.String, serde.String)
	for _, p := range []struct {
		v     string
		kafka int64
	}{{"a:100", 5000}, {"b:90", 6000}, {"c:-", 7000}, {"d:150", 1}} {
		if err := input.Pipe("k", p.v, runnertest.At(ms(p.kafka))); err != nil {
			t.Fatal(err)
		}
	}
	want := "a:100@100/st100 advance 0->100 b:90@90/st100 c:-@7000/st7000 advance 100->7000 d:150@150/st7000"
	if got := strings.Join(log, " "); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	out, err := runnertest.NewOutput(d, "out", serde.String, serde.String).Records()
	if err != nil {
		t.Fatal(err)
	}
	var stamps []int64
	for _, r := range out {
		stamps = append(stamps, r.Timestamp.UnixMilli())
	}
	if fmt.Sprint(stamps) != "[100 90 7000 150]" {
		t.Errorf("output timestamps %v, want the event times", stamps)
	}
}

// sessionTask is a low-level task with timers: each record (re)arms a
// stream-time timer 10ms after it, per key, and a wall-clock timer per key
// a minute after the driver's clock; a stream-time timer that fires emits
// "<key> idle"; a wall-clock one "<key> wall".
type sessionTask struct{ timers stream.Timers }

func (s *sessionTask) Init(ctx stream.Context) (err error) {
	s.timers, err = ctx.Timers("session-timers")
	return err
}

func (s *sessionTask) Process(ctx stream.Context, rec stream.RawRecord) error {
	if string(rec.Value) == "cancel" {
		return s.timers.Delete(stream.StreamTimeTimer, rec.Key)
	}
	if err := s.timers.Set(stream.StreamTimeTimer, rec.Key, rec.Timestamp.Add(10*time.Millisecond)); err != nil {
		return err
	}
	if _, set, err := s.timers.Get(stream.WallClockTimer, rec.Key); err != nil || set {
		return err
	}
	return s.timers.Set(stream.WallClockTimer, rec.Key, ms(60_000))
}

func (s *sessionTask) OnTimer(ctx stream.Context, tm stream.Timer) error {
	what := " idle"
	if tm.Kind == stream.WallClockTimer {
		what = " wall"
	}
	if string(tm.Key) == "boom" {
		return errors.New("timer failed")
	}
	return ctx.Emit("events", stream.RawRecord{Key: tm.Key, Value: append([]byte(tm.Key), what...)})
}

func newSessionDriver(t *testing.T) *runnertest.Driver {
	t.Helper()
	job := stream.NewJob("sessions")
	stream.AddTask(job, stream.TaskSpec{
		Name: "sessions", Inputs: []string{"clicks"}, Outputs: []string{"events"},
		Timers: "session-timers",
		New:    func() stream.Task { return new(sessionTask) },
	})
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func events(d *runnertest.Driver) string {
	var out []string
	for _, r := range d.AllRecords("events") {
		out = append(out, fmt.Sprintf("%s@%d", r.Value, r.Timestamp.UnixMilli()))
	}
	return strings.Join(out, ", ")
}

func TestStreamTimeTimers(t *testing.T) {
	d := newSessionDriver(t)
	clicks := runnertest.NewInput(d, "clicks", serde.String, serde.String)
	pipe := func(key string, at int64, v ...string) {
		t.Helper()
		val := "click"
		if len(v) > 0 {
			val = v[0]
		}
		if err := clicks.Pipe(key, val, runnertest.At(ms(at))); err != nil {
			t.Fatal(err)
		}
	}
	pipe("b", 100) // b due 110
	pipe("a", 100) // a due 110
	pipe("c", 104) // c due 114
	pipe("b", 105) // b moves to 115
	if got := events(d); got != "" {
		t.Fatalf("fired early: %s", got)
	}
	pipe("x", 109)
	pipe("d", 90) // out of order: stream time stays 109; d due 100, already passed: fires after this record
	if got := events(d); got != "d idle@100" {
		t.Fatalf("after an overdue timer: %s", got)
	}
	pipe("c", 112, "cancel") // stream time 112: c is cancelled, a fires (110)
	pipe("y", 130)           // stream time 130: b (115), x (119) fire, in time order
	if got, want := events(d), "d idle@100, a idle@110, b idle@115, x idle@119"; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// The timers live in the timer store, which has a changelog.
	if n := len(d.AllRecords("sessions-session-timers-changelog")); n == 0 {
		t.Error("the timer store wrote no changelog")
	}
}

func TestWallClockTimers(t *testing.T) {
	d := newSessionDriver(t)
	clicks := runnertest.NewInput(d, "clicks", serde.String, serde.String)
	for _, k := range []string{"b", "a"} {
		if err := clicks.Pipe(k, "click", runnertest.At(ms(1_000_000))); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetTime(ms(59_999)); err != nil {
		t.Fatal(err)
	}
	if got := events(d); strings.Contains(got, "wall") {
		t.Fatalf("wall-clock timers fired before their time: %s", got)
	}
	if err := d.SetTime(ms(60_000)); err != nil {
		t.Fatal(err)
	}
	if got, want := events(d), "a wall@60000, b wall@60000"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestTimerErrors(t *testing.T) {
	d := newSessionDriver(t)
	clicks := runnertest.NewInput(d, "clicks", serde.String, serde.String)
	if err := clicks.Pipe("boom", "click", runnertest.At(ms(10))); err != nil {
		t.Fatal(err)
	}
	err := clicks.Pipe("later", "click", runnertest.At(ms(50)))
	var perr *stream.ProcessError
	if !errors.As(err, &perr) || !strings.Contains(err.Error(), `stream-time timer "boom"`) || perr.Offset != 1 {
		t.Errorf("a failing stream-time timer: %v; want a process error at the record that moved stream time, naming the timer", err)
	}
	if err := d.SetTime(ms(60_000)); err == nil || !strings.Contains(err.Error(), "wall-clock timer") {
		t.Errorf("a failing wall-clock timer: %v", err)
	}

	// A task that declares timers must handle them.
	job := stream.NewJob("no-handler")
	stream.AddTask(job, stream.TaskSpec{
		Name: "t", Inputs: []string{"in"}, Timers: "t-timers",
		New: func() stream.Task { return new(forwarder) },
	})
	d2, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	err = d2.Pipe("in", stream.RawRecord{Value: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "no OnTimer method") {
		t.Errorf("task without OnTimer: %v", err)
	}
}

type forwarder struct{}

func (forwarder) Process(stream.Context, stream.RawRecord) error { return nil }

func TestTimersNeedATimerStore(t *testing.T) {
	job := stream.NewJob("no-store")
	var got error
	stream.AddTask(job, stream.TaskSpec{
		Name: "t", Inputs: []string{"in"},
		New: func() stream.Task {
			return taskFunc(func(ctx stream.Context, _ stream.RawRecord) error {
				_, got = ctx.Timers("timers")
				return nil
			})
		},
	})
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Pipe("in", stream.RawRecord{Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if got == nil || !strings.Contains(got.Error(), "not a timer store") {
		t.Errorf("Timers of an undeclared store: %v", got)
	}
}

type taskFunc func(stream.Context, stream.RawRecord) error

func (f taskFunc) Process(ctx stream.Context, r stream.RawRecord) error { return f(ctx, r) }

// Records an operator drops go to the dead-letter topic under the dlq
// policy for drops, once each, with the reason; under the default they
// are only counted.
func TestDroppedToDeadLetter(t *testing.T) {
	for _, policy := range []stream.ErrorPolicy{stream.PolicySkip, stream.PolicyDeadLetter} {
		t.Run(string(policy), func(t *testing.T) {
			job := stream.NewJob("late")
			in := stream.Input(job, "in", serde.String, serde.String)
			counts := operators.WindowedCount(operators.GroupByKey(in, serde.String, serde.String), "counts",
				operators.Tumbling(10*time.Millisecond))
			stream.Output(counts.ToStream(), "out", stream.WindowedSerde(serde.String), serde.Int64)
			d, err := runnertest.New(job, runnertest.OnDropped(policy))
			if err != nil {
				t.Fatal(err)
			}
			input := runnertest.NewInput(d, "in", serde.String, serde.String)
			for _, at := range []int64{5, 25, 7} { // 7 is late
				if err := input.Pipe("k", fmt.Sprint(at), runnertest.At(ms(at))); err != nil {
					t.Fatal(err)
				}
			}
			if n := d.Dropped()["late"]; n != 1 {
				t.Errorf("%d drops counted, want 1", n)
			}
			dlq := d.AllRecords(job.Name() + "-dlq")
			if policy == stream.PolicySkip {
				if len(dlq) != 0 {
					t.Errorf("skip policy dead-lettered %d records", len(dlq))
				}
				return
			}
			if len(dlq) != 1 {
				t.Fatalf("dead letters: %d, want 1", len(dlq))
			}
			dl, err := stream.ParseDeadLetter(dlq[0].Headers)
			if err != nil {
				t.Fatal(err)
			}
			if string(dlq[0].Value) != "7" || dl.Kind != stream.KindDropped || dl.Offset != 2 || !strings.Contains(dl.Error, "late") {
				t.Errorf("dead letter %q: %+v", dlq[0].Value, dl)
			}
		})
	}
}

func TestOnDroppedRejectsFail(t *testing.T) {
	job := stream.NewJob("j")
	stream.Output(stream.Input(job, "in", serde.String, serde.String), "out", serde.String, serde.String)
	job.OnDropped(stream.PolicyFail)
	if _, err := job.Build(); err == nil || !strings.Contains(err.Error(), "OnDropped") {
		t.Errorf("OnDropped(fail): %v", err)
	}
}

// expirer is a typed processor with a timer store: it forwards each
// record and, 10ms of stream time after a key's last record, forwards
// "<key> expired".
type expirer struct {
	next   stream.Processor[string, string]
	timers stream.Timers
}

func (e *expirer) Init(ctx stream.Context) (err error) {
	e.timers, err = ctx.Timers("expiry")
	return err
}

func (e *expirer) Process(ctx stream.Context, r stream.Record[string, string]) error {
	if err := e.timers.Set(stream.StreamTimeTimer, []byte(r.Key), r.Timestamp.Add(10*time.Millisecond)); err != nil {
		return err
	}
	return e.next.Process(ctx, r)
}

func (e *expirer) OnTimer(ctx stream.Context, tm stream.Timer) error {
	return e.next.Process(ctx, stream.Record[string, string]{Key: string(tm.Key), Value: "expired"})
}

// A processor in a typed graph declares a timer store with WithTimers and
// gets its timers; their records take the timer's time.
func TestProcessorTimers(t *testing.T) {
	job := stream.NewJob("expiry")
	in := stream.Input(job, "in", serde.String, serde.String)
	out := stream.Via(in, "expire", func(next stream.Processor[string, string]) stream.Processor[string, string] {
		return &expirer{next: next}
	}, stream.WithTimers("expiry"))
	stream.Output(out, "out", serde.String, serde.String)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	input := runnertest.NewInput(d, "in", serde.String, serde.String)
	for _, r := range []struct {
		k  string
		at int64
	}{{"a", 1}, {"b", 5}, {"a", 8}, {"c", 30}} {
		if err := input.Pipe(r.k, "v", runnertest.At(ms(r.at))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, r := range d.AllRecords("out") {
		got = append(got, fmt.Sprintf("%s=%s@%d", r.Key, r.Value, r.Timestamp.UnixMilli()))
	}
	want := "a=v@1 b=v@5 a=v@8 c=v@30 b=expired@15 a=expired@18"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
}
