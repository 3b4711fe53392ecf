package stream

import (
	"fmt"
	"time"
)

// InputOption configures an input topic of a job (see [Input]).
type InputOption[K, V any] func(*inputOptions[K, V])

type inputOptions[K, V any] struct {
	eventTime func(K, V) time.Time
}

// EventTime makes an input's records take their timestamp from their
// content instead of their Kafka timestamp: fn returns the event time of a
// decoded record, or the zero time to keep the Kafka timestamp. The event
// time becomes the record's Timestamp and drives the task's stream time,
// windows and stream-time timers. fn must be deterministic.
//
//	views := stream.Input(job, "views", serde.String, serde.JSON[View](),
//		stream.EventTime(func(_ string, v View) time.Time { return v.At }))
func EventTime[K, V any](fn func(K, V) time.Time) InputOption[K, V] {
	return func(o *inputOptions[K, V]) { o.eventTime = fn }
}

// clock keeps the event time of one task: its stream time and the time of
// the record being processed. It reads no wall clock.
type clock struct {
	stream  time.Time // the largest event time seen
	current time.Time // the event time of the record being processed
}

func (c *clock) observe(t time.Time) {
	c.current = t
	if t.After(c.stream) {
		c.stream = t
	}
}

// StreamTimeHandler is implemented by processors that act as stream time
// passes, such as windowed aggregations closing their windows.
type StreamTimeHandler interface {
	// OnStreamTime is called after each record that moves the task's
	// stream time forward, with the stream time before (zero for the
	// task's first record) and after it. It runs on the task's goroutine
	// once the record has gone through every processor and before
	// stream-time timers fire; processors are called upstream first.
	// What it forwards is part of the processing of that record.
	OnStreamTime(ctx Context, from, to time.Time) error
}

// TimerKind is the clock a timer follows.
type TimerKind uint8

const (
	// StreamTimeTimer fires when the task's stream time reaches it. Stream
	// time is a function of the input log, so these timers fire at the
	// same point of the input every time the log is processed, after a
	// restart too: they are deterministic.
	StreamTimeTimer TimerKind = 1
	// WallClockTimer fires when the wall clock reaches it, between
	// records (the runner wakes up for it when no input arrives). Where
	// it falls relative to the input depends on how fast the input
	// arrives: it is not deterministic, and replaying the log does not
	// reproduce it. It is kept in the timer store like a stream-time
	// timer, so one that was due while the task was stopped fires when
	// the task starts again. In runnertest the driver's clock
	// (runnertest's Driver.SetTime) stands for the wall clock.
	WallClockTimer TimerKind = 2
)

func (k TimerKind) String() string {
	switch k {
	case StreamTimeTimer:
		return "stream-time"
	case WallClockTimer:
		return "wall-clock"
	}
	return fmt.Sprintf("TimerKind(%d)", uint8(k))
}

// Timer is a timer that fell due, as given to [TimerHandler.OnTimer].
type Timer struct {
	Kind TimerKind
	Key  []byte
	At   time.Time
}

// Timers sets and cancels the timers kept in one timer store (see
// [TaskSpec.Timers] and [WithTimers]); get them with [Context.Timers].
//
// A timer is named by its kind and a key of the caller's choosing (an
// entity ID, say): setting it again moves it. Timers are kept in the
// store, so they survive restarts and move with their task. Due timers are
// delivered, in order of time then key, to the OnTimer method of the task
// or processor that declared the store. A timer fires once; OnTimer may
// set it again. A stream-time timer set for a time stream time has
// already reached fires after the current record, or, when set by OnTimer,
// in the same round if it sorts after the timer firing and after the next
// record otherwise.
type Timers interface {
	// Set sets timer key of kind to fire at at (millisecond precision).
	Set(kind TimerKind, key []byte, at time.Time) error
	// Delete cancels timer key of kind; a missing timer is not an error.
	Delete(kind TimerKind, key []byte) error
	// Get returns when timer key of kind fires, if it is set.
	Get(kind TimerKind, key []byte) (time.Time, bool, error)
}

// TimerHandler is implemented by tasks and processors that declare a
// timer store: OnTimer receives their timers as they fall due, on the
// task's goroutine, between records. A zero Timestamp given to
// [Context.Emit] in OnTimer takes the timer's time. An error stops the
// task as a processing error does.
type TimerHandler interface {
	OnTimer(ctx Context, t Timer) error
}

// WithTimers declares a timer store for a node's processor: a store,
// with a changelog like any other, that keeps the timers the processor
// sets through [Context.Timers](name). The processor must implement
// [TimerHandler].
func WithTimers(name string) NodeOption {
	return func(o *nodeOptions) { o.timers = append(o.timers, name) }
}
