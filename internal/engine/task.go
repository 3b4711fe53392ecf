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
	opts options
}

// NewTask instantiates the processors of task id. partitions gives the
// partition count of each output topic of the job; stores are the task's
// stores (nil if its sub-topology has none).
func NewTask(ctx context.Context, topo *stream.Topology, id stream.TaskID, out Emitter, partitions map[string]int32, stores *state.TaskStores, opts ...Option) (*Task, error) {
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
	t := &Task{id: id, inst: inst, opts: options{onDeserialize: stream.PolicyFail, onProcess: stream.PolicyFail}}
	for _, o := range opts {
		o(&t.opts)
	}
	for topic, o := range outputs {
		o.maxBytes = t.opts.limits[topic]
	}
	t.tc = taskContext{
		ctx:         ctx,
		id:          id,
		out:         out,
		outputs:     outputs,
		partitioner: kgo.StickyKeyPartitioner(nil).ForTopic(""),
		stores:      stores,
		inst:        inst,
		onDropped:   t.opts.hooks.Dropped,
		globals:     t.opts.globals,
	}
	if t.opts.taskHeader {
		t.tc.stamp = []byte(id.String())
	}
	for _, spec := range sub.Stores {
		if stores == nil || stores.Store(spec.Name) == nil {
			return nil, fmt.Errorf("engine: task %s: store %q not provided", id, spec.Name)
		}
		if spec.Changelog == "" {
			topic := topo.ChangelogTopic(spec.Name)
			if err := stores.SetRecordLimit(spec.Name, topic, t.opts.limits[topic]); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// output is a declared output topic of a task.
type output struct {
	partitions int32
	maxBytes   int   // the largest record the topic accepts; 0: no limit
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
	defer t.recoverInto(&err)
	return t.inst.Init(&t.tc)
}

// Process runs one input record through the task. A record is atomic:
// what it emits is written, and its store writes kept, only if its
// processing succeeds. If it fails (an error, or a panic in user code),
// its effects are undone and the task's policy applies (see WithPolicy):
// under PolicyFail, or for an error that is stream.Fatal, Process returns
// a *stream.ProcessError naming the record; otherwise it skips or
// dead-letters the record and returns nil.
func (t *Task) Process(rec stream.RawRecord) error {
	t.cur = coords{rec.Topic, rec.Partition, rec.Offset}
	if ms := rec.Timestamp.UnixMilli(); ms < 0 {
		return t.handle(rec, &stream.DeserializeError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
			Field: "timestamp", Err: fmt.Errorf("timestamp %d ms is negative (-1: the producer set none)", ms)})
	}
	if err := t.process(rec); err != nil {
		t.tc.discard()
		return t.handle(rec, err)
	}
	if err := t.deadLetterDropped(rec); err != nil {
		t.tc.discard()
		return err
	}
	t.tc.release(t)
	return nil
}

func (t *Task) process(rec stream.RawRecord) (err error) {
	t.tc.begin()
	defer func() {
		if r := recover(); r != nil {
			err = &stream.PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return t.inst.Process(&t.tc, rec)
}

// coords locates the input record being processed.
type coords struct {
	topic     string
	partition int32
	offset    int64
}

func (t *Task) errorAt(err error) *stream.ProcessError {
	return &stream.ProcessError{Task: t.id, Topic: t.cur.topic, Partition: t.cur.partition, Offset: t.cur.offset, Err: err}
}

// Flush lets processors that hold records back forward them; the runner
// calls it before each commit.
func (t *Task) Flush() (err error) {
	defer t.recoverInto(&err)
	if err := t.inst.Flush(&t.tc); err != nil {
		return fmt.Errorf("engine: task %s: flush: %w", t.id, err)
	}
	return nil
}

// Close closes the task's processors.
func (t *Task) Close() (err error) {
	defer t.recoverInto(&err)
	return t.inst.Close()
}

// StreamTime returns the task's stream time.
func (t *Task) StreamTime() time.Time { return t.inst.StreamTime() }

// recoverInto turns a panic in user code outside a record (Init, Flush,
// Close) into an error, so that a bug in one processor stops its task
// cleanly instead of killing the process. Process recovers on its own.
func (t *Task) recoverInto(err *error) {
	r := recover()
	if r == nil {
		return
	}
	*err = fmt.Errorf("engine: task %s: %w", t.id, &stream.PanicError{Value: r, Stack: debug.Stack()})
}

// taskContext is the stream.Context of one task.
type taskContext struct {
	ctx         context.Context
	id          stream.TaskID
	out         Emitter
	outputs     map[string]*output // by declared output topic
	partitioner kgo.TopicPartitioner
	scratch     kgo.Record // the key to partition, without an allocation per record
	stores      *state.TaskStores
	inst        *stream.Instance // keeps the task's stream time and event time

	// The effects of the record being processed, held back until it is
	// processed (see policy.go).
	inRecord  bool
	held      []heldRecord
	drops     []string
	onDropped func(Dropped)

	globals *state.GlobalStores // the instance's global tables; see global.go
	stamp   []byte              // the task header's value, if stamping; see global.go
}

func (c *taskContext) Store(name string) (stream.Store, error) {
	if c.stores != nil {
		if s := c.stores.Store(name); s != nil {
			return s, nil
		}
	}
	if c.globals != nil {
		if s := c.globals.Store(name); s != nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("engine: task %s: no store %q (declare it with stream.WithStores or TaskSpec.Stores)", c.id, name)
}

func (c *taskContext) Context() context.Context { return c.ctx }
func (c *taskContext) TaskID() stream.TaskID    { return c.id }
func (c *taskContext) StreamTime() time.Time    { return c.inst.StreamTime() }

func (c *taskContext) Emit(topic string, rec stream.RawRecord) error {
	o, ok := c.outputs[topic]
	if !ok {
		return fmt.Errorf("engine: task %s: emit to %q, which is not a declared output of its sub-topology", c.id, topic)
	}
	if rec.Timestamp.IsZero() {
		rec.Timestamp = c.inst.EventTime()
	}
	if !rec.Timestamp.IsZero() && rec.Timestamp.UnixMilli() < 0 {
		return fmt.Errorf("engine: task %s: emit to %q: timestamp %s is before 1970; Kafka timestamps are milliseconds since the Unix epoch", c.id, topic, rec.Timestamp)
	}
	if c.stamp != nil {
		rec.Headers = stampTask(rec.Headers, c.stamp)
	}
	if o.maxBytes > 0 {
		if n := stream.RecordBatchSize(rec.Key, rec.Value, rec.Headers); n > o.maxBytes {
			return &stream.RecordTooLargeError{Topic: topic, Size: n, Max: o.maxBytes}
		}
	}
	var p int32
	if rec.Key == nil {
		p = c.id.Partition % o.partitions
	} else {
		c.scratch.Key = rec.Key
		p = int32(c.partitioner.Partition(&c.scratch, int(o.partitions)))
		c.scratch.Key = nil
	}
	if c.inRecord {
		c.held = append(c.held, heldRecord{o: o, topic: topic, partition: p, rec: rec})
		return nil
	}
	o.emitted++
	c.out.Emit(topic, p, rec)
	return nil
}

func (c *taskContext) Dropped(reason string) {
	switch {
	case c.inRecord:
		c.drops = append(c.drops, reason) // reported if the record succeeds
	case c.onDropped != nil:
		c.onDropped(Dropped{Task: c.id, Reason: reason}) // from Flush: no record to name
	}
}
