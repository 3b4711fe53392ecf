// Package engine runs the processors of one task: the code shared by the
// runner and the in-process test driver, so a job's unit tests exercise
// exactly what production runs.
package engine

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
)

// Emitter receives the records a task writes to its output topics.
type Emitter interface {
	// Emit queues rec for topic and partition. Implementations may send
	// asynchronously; a write that fails must keep the input offset that
	// caused it from being committed.
	Emit(topic string, partition int32, rec stream.RawRecord)
}

// Task is one task's processors with the context they run in. A Task is
// used by one goroutine at a time.
type Task struct {
	id   stream.TaskID
	inst *stream.Instance
	tc   taskContext
	cur  coords // the record being processed, for errors
}

// NewTask instantiates the processors of task id. partitions gives the
// partition count of each output topic of the job; stores are the task's
// stores (nil if its sub-topology has none).
func NewTask(ctx context.Context, topo *stream.Topology, id stream.TaskID, out Emitter, partitions map[string]int32, stores *state.TaskStores) (*Task, error) {
	inst, err := topo.NewInstance(id.Subtopology)
	if err != nil {
		return nil, err
	}
	sub := topo.Subtopologies()[id.Subtopology]
	outputs := make(map[string]*output, len(sub.Outputs))
	for _, o := range sub.Outputs {
		n, ok := partitions[o]
		if !ok || n <= 0 {
			return nil, fmt.Errorf("engine: task %s: partition count of output topic %q unknown", id, o)
		}
		outputs[o] = &output{partitions: n}
	}
	t := &Task{id: id, inst: inst}
	t.tc = taskContext{
		ctx:         ctx,
		id:          id,
		out:         out,
		outputs:     outputs,
		partitioner: kgo.StickyKeyPartitioner(nil).ForTopic(""),
		stores:      stores,
	}
	for _, spec := range sub.Stores {
		if stores == nil || stores.Store(spec.Name) == nil {
			return nil, fmt.Errorf("engine: task %s: store %q not provided", id, spec.Name)
		}
	}
	return t, nil
}

// output is a declared output topic of a task.
type output struct {
	partitions int32
	emitted    int64 // records emitted since the last TakeEmitted
}

// TakeEmitted calls fn with the number of records emitted to each output
// topic since the last call, for metrics without a shared counter on the
// per-record path.
func (t *Task) TakeEmitted(fn func(topic string, n int64)) {
	for topic, o := range t.tc.outputs {
		if o.emitted > 0 {
			fn(topic, o.emitted)
			o.emitted = 0
		}
	}
}

// ID returns the task's ID.
func (t *Task) ID() stream.TaskID { return t.id }

// Init initialises the task's processors.
func (t *Task) Init() (err error) {
	defer t.recoverInto(&err, false)
	return t.inst.Init(&t.tc)
}

// Process runs one input record through the task. An error, or a panic in
// user code, comes back as a *stream.ProcessError naming the record.
func (t *Task) Process(rec stream.RawRecord) (err error) {
	defer t.recoverInto(&err, true)
	if rec.Timestamp.After(t.tc.streamTime) {
		t.tc.streamTime = rec.Timestamp
	}
	t.cur = coords{rec.Topic, rec.Partition, rec.Offset}
	t.tc.currentTS = rec.Timestamp
	err = t.inst.Process(&t.tc, rec)
	t.tc.currentTS = time.Time{}
	if err != nil {
		return t.errorAt(err)
	}
	return nil
}

// coords locates the input record being processed.
type coords struct {
	topic     string
	partition int32
	offset    int64
}

func (t *Task) errorAt(err error) error {
	return &stream.ProcessError{Task: t.id, Topic: t.cur.topic, Partition: t.cur.partition, Offset: t.cur.offset, Err: err}
}

// Flush lets processors that hold records back forward them; the runner
// calls it before each commit.
func (t *Task) Flush() (err error) {
	defer t.recoverInto(&err, false)
	if err := t.inst.Flush(&t.tc); err != nil {
		return fmt.Errorf("engine: task %s: flush: %w", t.id, err)
	}
	return nil
}

// Close closes the task's processors.
func (t *Task) Close() (err error) {
	defer t.recoverInto(&err, false)
	return t.inst.Close()
}

// StreamTime returns the task's stream time.
func (t *Task) StreamTime() time.Time { return t.tc.streamTime }

// recoverInto turns a panic in user code into an error, so that a bug in
// one processor stops its task cleanly (nothing past the record is
// committed) instead of killing the process.
func (t *Task) recoverInto(err *error, processing bool) {
	r := recover()
	if r == nil {
		return
	}
	perr := &stream.PanicError{Value: r, Stack: debug.Stack()}
	if processing {
		t.tc.currentTS = time.Time{}
		*err = t.errorAt(perr)
		return
	}
	*err = fmt.Errorf("engine: task %s: %w", t.id, perr)
}

// taskContext is the stream.Context of one task.
type taskContext struct {
	ctx         context.Context
	id          stream.TaskID
	out         Emitter
	outputs     map[string]*output // by declared output topic
	partitioner kgo.TopicPartitioner
	scratch     kgo.Record // the key to partition, without an allocation per record
	streamTime  time.Time
	currentTS   time.Time // the timestamp of the input record being processed
	stores      *state.TaskStores
}

func (c *taskContext) Store(name string) (stream.Store, error) {
	if c.stores != nil {
		if s := c.stores.Store(name); s != nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("engine: task %s: no store %q (declare it with stream.WithStores or TaskSpec.Stores)", c.id, name)
}

func (c *taskContext) Context() context.Context { return c.ctx }
func (c *taskContext) TaskID() stream.TaskID    { return c.id }
func (c *taskContext) StreamTime() time.Time    { return c.streamTime }

func (c *taskContext) Emit(topic string, rec stream.RawRecord) error {
	o, ok := c.outputs[topic]
	if !ok {
		return fmt.Errorf("engine: task %s: emit to %q, which is not a declared output of its sub-topology", c.id, topic)
	}
	if rec.Timestamp.IsZero() {
		rec.Timestamp = c.currentTS
	}
	var p int32
	if rec.Key == nil {
		p = c.id.Partition % o.partitions
	} else {
		c.scratch.Key = rec.Key
		p = int32(c.partitioner.Partition(&c.scratch, int(o.partitions)))
		c.scratch.Key = nil
	}
	o.emitted++
	c.out.Emit(topic, p, rec)
	return nil
}
