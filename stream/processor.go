package stream

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Processor handles the records of one stream in one task, one record at a
// time, in order. Processors are created per task (see [Via]), so a
// processor needs no locking of its own state. Returning an error stops
// the task: the input record is not committed and will be processed again
// when the task restarts.
type Processor[K, V any] interface {
	Process(ctx Context, rec Record[K, V]) error
}

// ProcessorFunc adapts a function to a [Processor].
type ProcessorFunc[K, V any] func(ctx Context, rec Record[K, V]) error

// Process calls f.
func (f ProcessorFunc[K, V]) Process(ctx Context, rec Record[K, V]) error { return f(ctx, rec) }

// Initializer is implemented by processors and tasks that need to set up
// before their first record. Init runs on the task's goroutine.
type Initializer interface {
	Init(ctx Context) error
}

// Closer is implemented by processors and tasks that hold resources. Close
// runs when the task stops, after its last record.
type Closer interface {
	Close() error
}

// Flusher is implemented by processors that hold records back until the
// task commits (such as operators.ToStreamOnCommit). Flush runs on the
// task's goroutine before each commit and may forward records; they are
// part of that commit.
type Flusher interface {
	Flush(ctx Context) error
}

// builder instantiates the processors of one sub-topology for one task.
type builder struct {
	memo    map[any]any // port or operator node -> its processor
	tracked []any       // processors with Init, Close, Flush or time handlers, in build order
	clock   *clock      // the task's event time, which sources with an extractor set
	owners  map[*node]any
}

// track remembers p if the instance must call it other than per record.
// Processors are built downstream first (a processor is built after what
// it forwards to), so tracked is in reverse topological order.
func (b *builder) track(p any) {
	_, isInit := p.(Initializer)
	_, isClose := p.(Closer)
	_, isFlush := p.(Flusher)
	_, isTime := p.(StreamTimeHandler)
	if isInit || isClose || isFlush || isTime {
		b.tracked = append(b.tracked, p)
	}
}

// own records p as the processor of node n, which may own timer stores.
func (b *builder) own(n *node, p any) {
	if len(n.timers) > 0 {
		if b.owners == nil {
			b.owners = map[*node]any{}
		}
		b.owners[n] = p
	}
}

// Instance is the processors of one task: an entry point per input topic.
// It is created by [Topology.NewInstance] and used by one goroutine at a
// time. Runners call Init once, Process for each input record in order,
// then Close.
//
// An Instance keeps the task's event time: its stream time (the largest
// event time seen), which moves forward as records are processed, and the
// timers of its timer stores, which it fires as stream time passes them.
type Instance struct {
	sources   map[string]Processor[[]byte, []byte]
	eventTime map[string]bool // inputs whose source sets the event time (see EventTime)
	tracked   []any
	handlers  []StreamTimeHandler // upstream first
	clock     *clock
	owners    map[string]TimerHandler // timer store -> the processor that declared it
	timers    []*timerStore           // by store name, once Init has run
}

// Init initialises the instance's processors in the order they were
// built. They may get their stores and timers, but not read them yet: a
// runner restores the stores after Init.
func (in *Instance) Init(ctx Context) error {
	in.timers = in.timers[:0]
	for _, name := range slices.Sorted(maps.Keys(in.owners)) {
		st, err := ctx.Store(name)
		if err != nil {
			return fmt.Errorf("stream: init task %s: timer store: %w", ctx.TaskID(), err)
		}
		in.timers = append(in.timers, &timerStore{name: name, store: st, owner: in.owners[name], clock: in.clock})
	}
	for _, p := range in.tracked {
		if i, ok := p.(Initializer); ok {
			if err := i.Init(ctx); err != nil {
				return fmt.Errorf("stream: init task %s: %w", ctx.TaskID(), err)
			}
		}
	}
	return nil
}

// Process runs one input record through the processors. The record's
// Topic must be an input of the instance's sub-topology.
//
// The record's event time (its Timestamp, or what its input's extractor
// returns) moves stream time forward. Once the record has gone through the
// processors, those implementing [StreamTimeHandler] are told if stream
// time moved, and the stream-time timers it reached fire: all of it is
// the processing of this record. If Process fails, stream time goes back
// to where it was: a failed record does not count.
func (in *Instance) Process(ctx Context, rec RawRecord) error {
	src, ok := in.sources[rec.Topic]
	if !ok {
		return fmt.Errorf("stream: task %s does not read topic %q", ctx.TaskID(), rec.Topic)
	}
	prev := in.clock.stream
	done := false
	defer func() {
		in.clock.current = time.Time{}
		if !done { // an error, or a panic on its way up
			in.clock.stream = prev
			// The runner undoes the record's store writes: what the timers
			// remember of their stores may no longer hold.
			for _, ts := range in.timers {
				ts.loaded = false
			}
		}
	}()
	if !in.eventTime[rec.Topic] {
		in.clock.observe(rec.Timestamp)
	}
	if err := src.Process(ctx, rec); err != nil {
		return err
	}
	if now := in.clock.stream; now.After(prev) {
		for _, h := range in.handlers {
			if err := h.OnStreamTime(ctx, prev, now); err != nil {
				return err
			}
		}
	}
	if err := in.fireTimers(ctx, StreamTimeTimer, in.clock.stream); err != nil {
		return err
	}
	done = true
	return nil
}

// StreamTime returns the task's stream time: the largest event time of
// the records processed, zero before the first.
func (in *Instance) StreamTime() time.Time { return in.clock.stream }

// SetStreamTime moves stream time forward to t, without telling the
// processors: runners restore the stream time of a task whose stores they
// restored, before processing its next record.
func (in *Instance) SetStreamTime(t time.Time) {
	if t.After(in.clock.stream) {
		in.clock.stream = t
	}
}

// EventTime returns the event time of the record being processed, or,
// while a timer fires, the timer's time; zero otherwise. It is the
// timestamp of records emitted without one.
func (in *Instance) EventTime() time.Time { return in.clock.current }

// Timers returns the timers of timer store name.
func (in *Instance) Timers(name string) (Timers, error) {
	for _, ts := range in.timers {
		if ts.name == name {
			return ts, nil
		}
	}
	return nil, fmt.Errorf("stream: %q is not a timer store of this task (declare it with TaskSpec.Timers or WithTimers)", name)
}

// FireTimers fires the timers of kind that are due at now, store by
// store, each store's in order of time then key. Runners call it with the
// wall clock for WallClockTimer, between records; Process fires
// stream-time timers itself.
func (in *Instance) FireTimers(ctx Context, kind TimerKind, now time.Time) error {
	return in.fireTimers(ctx, kind, now)
}

func (in *Instance) fireTimers(ctx Context, kind TimerKind, now time.Time) error {
	for _, ts := range in.timers {
		if err := ts.fire(ctx, kind, now.UnixMilli()); err != nil {
			return err
		}
	}
	return nil
}

// NextTimer returns when the earliest timer of kind is due, if there is
// one. Runners use it to wake up for wall-clock timers. It reads the
// timer stores, so it must not be called before they are restored.
func (in *Instance) NextTimer(kind TimerKind) (time.Time, bool, error) {
	next := int64(math.MaxInt64)
	for _, ts := range in.timers {
		n, err := ts.nextDue(kind)
		if err != nil {
			return time.Time{}, false, err
		}
		next = min(next, n)
	}
	if next == math.MaxInt64 {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(next), true, nil
}

// Flush flushes the instance's processors that hold records back,
// upstream first, so that what one flushes reaches the next before it
// flushes.
func (in *Instance) Flush(ctx Context) error {
	for i := len(in.tracked) - 1; i >= 0; i-- {
		if f, ok := in.tracked[i].(Flusher); ok {
			if err := f.Flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close closes the instance's processors in reverse build order and
// returns all their errors joined.
func (in *Instance) Close() error {
	var errs []error
	for i := len(in.tracked) - 1; i >= 0; i-- {
		if c, ok := in.tracked[i].(Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
