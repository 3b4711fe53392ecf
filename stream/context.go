package stream

import (
	"context"
	"time"
)

// Context is what a processor sees of the task running it. A Context
// belongs to one task and is used by one goroutine at a time; it must not
// be kept past the call it was passed to except by the processor that owns
// the task (a [Task] may keep the Context given to Init).
type Context interface {
	// Context is cancelled when the task is shutting down. Use it for
	// blocking calls a processor makes to the outside world.
	Context() context.Context

	// TaskID is the task this processor runs in.
	TaskID() TaskID

	// Emit writes a record to an output topic the job declared (with
	// [Output] or [TaskSpec.Outputs]). The partition is chosen from the
	// key as Kafka's default partitioner does; a nil key goes to the
	// task's own partition (modulo the topic's partition count), so the
	// choice is deterministic. A zero Timestamp takes the timestamp of the
	// input record being processed. Emit does not wait for the broker:
	// the runner commits the input offset only after the write is
	// acknowledged. The record's bytes must not be modified after Emit.
	Emit(topic string, rec RawRecord) error

	// Store returns a store the processor's node or task declared (see
	// [WithStores] and [TaskSpec.Stores]).
	Store(name string) (Store, error)

	// Timers returns the timers kept in the timer store name, which the
	// task or processor declared ([TaskSpec.Timers], [WithTimers]).
	Timers(name string) (Timers, error)

	// StreamTime is the largest event time (record timestamp, or what an
	// input's [EventTime] extractor returned) this task has processed: the
	// task's clock. It never goes backwards and never reads the wall
	// clock. The runner keeps it with each commit of a task that has
	// stores and restores it with them, so after a restart it goes on from
	// where the last commit left it.
	StreamTime() time.Time

	// Dropped reports that the record being processed is dropped on
	// purpose, for reason: a short phrase such as "null key" or "late".
	// The runner counts drops by reason (metric
	// samsa_dropped_records_total) and logs them at a limited rate; the
	// test driver counts them (runnertest's Driver.Dropped).
	Dropped(reason string)
}
