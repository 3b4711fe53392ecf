package stream

import (
	"errors"
	"fmt"
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
	tracked []any       // processors with Init or Close, in build order
}

func (b *builder) track(p any) {
	_, isInit := p.(Initializer)
	_, isClose := p.(Closer)
	_, isFlush := p.(Flusher)
	if isInit || isClose || isFlush {
		b.tracked = append(b.tracked, p)
	}
}

// Instance is the processors of one task: an entry point per input topic.
// It is created by [Topology.NewInstance] and used by one goroutine at a
// time. Runners call Init once, Process for each input record in order,
// then Close.
type Instance struct {
	sources map[string]Processor[[]byte, []byte]
	tracked []any
}

// Init initialises the instance's processors in the order they were built.
func (in *Instance) Init(ctx Context) error {
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
func (in *Instance) Process(ctx Context, rec RawRecord) error {
	src, ok := in.sources[rec.Topic]
	if !ok {
		return fmt.Errorf("stream: task %s does not read topic %q", ctx.TaskID(), rec.Topic)
	}
	return src.Process(ctx, rec)
}

// Flush flushes the instance's processors that hold records back, in the
// order they were built (upstream first).
func (in *Instance) Flush(ctx Context) error {
	for _, p := range in.tracked {
		if f, ok := p.(Flusher); ok {
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
