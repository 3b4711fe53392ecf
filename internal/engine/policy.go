package engine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
)

// Option configures a Task.
type Option func(*options)

type options struct {
	onDeserialize stream.ErrorPolicy
	onProcess     stream.ErrorPolicy
	onDropped     stream.ErrorPolicy // see dropped.go
	dlqTopic      string
	dlqPartitions int32
	limits        map[string]int // largest record per topic; missing: no limit
	hooks         Hooks
	globals       *state.GlobalStores // see global.go
	taskHeader    bool
}

// WithPolicy sets what the task does with a record that fails: to
// deserialize, or in processing. Under PolicyDeadLetter the record goes to
// dlqTopic, which has dlqPartitions partitions: to the input record's
// partition number modulo that count, so the dead letters of one input
// partition stay in order. Default: PolicyFail for both.
func WithPolicy(onDeserialize, onProcess stream.ErrorPolicy, dlqTopic string, dlqPartitions int32) Option {
	return func(o *options) {
		o.onDeserialize, o.onProcess = onDeserialize, onProcess
		o.dlqTopic, o.dlqPartitions = dlqTopic, dlqPartitions
	}
}

// WithRecordLimits gives the largest record, as a record batch of one
// (stream.RecordBatchSize), that each topic accepts: outputs, changelogs
// and the dead-letter topic. A processor emitting a larger record, or
// putting a value its changelog could not hold, fails on that record. A
// topic without an entry has no limit.
func WithRecordLimits(maxBytes map[string]int) Option {
	return func(o *options) { o.limits = maxBytes }
}

// WithHooks sets the functions told about skipped, dead-lettered and
// dropped records.
func WithHooks(h Hooks) Option { return func(o *options) { o.hooks = h } }

// Hooks are told about records a task did not process normally. They are
// called on the task's goroutine, so hooks shared by tasks that run in
// parallel must be safe for concurrent use. Nil hooks are skipped.
type Hooks struct {
	// BadRecord is called for each record skipped or dead-lettered.
	BadRecord func(BadRecord)
	// Dropped is called for each record an operator dropped on purpose
	// (stream.Context.Dropped), once the record is processed.
	Dropped func(Dropped)
}

// BadRecord is an input record that failed and was skipped or
// dead-lettered by policy.
type BadRecord struct {
	Task   stream.TaskID
	Kind   string             // stream.KindDeserialize or stream.KindProcess
	Policy stream.ErrorPolicy // PolicySkip or PolicyDeadLetter
	Record stream.RawRecord   // as read; its bytes must not be modified
	Err    error              // a *stream.ProcessError
}

// Dropped is a record an operator dropped on purpose.
type Dropped struct {
	Task      stream.TaskID
	Reason    string
	Topic     string
	Partition int32
	Offset    int64
}

// DeadLetterPartitions is the partition count the dead-letter topic is
// created with: the largest partition count among the job's input topics,
// so that the dead letters of input partition p go to partition p.
func DeadLetterPartitions(topo *stream.Topology, partitions map[string]int32) int32 {
	var n int32 = 1
	for _, t := range topo.Inputs() {
		n = max(n, partitions[t])
	}
	return n
}

// Limits of the text a dead-letter record carries.
const (
	maxDLQError = 4 << 10
	maxDLQStack = 8 << 10
)

// handle applies the task's policy to rec, whose processing failed with
// err and whose effects are already undone. It returns nil if the record
// was skipped or dead-lettered, or the error that stops the task.
func (t *Task) handle(rec stream.RawRecord, err error) error {
	perr := t.errorAt(err)
	kind, policy := stream.KindProcess, t.opts.onProcess
	var derr *stream.DeserializeError
	if errors.As(err, &derr) {
		kind, policy = stream.KindDeserialize, t.opts.onDeserialize
	}
	switch {
	case policy != stream.PolicySkip && policy != stream.PolicyDeadLetter:
		return perr
	case errors.Is(err, stream.ErrFatal):
		return perr
	case t.tc.ctx.Err() != nil:
		// The task is shutting down, and a processor's blocking call may
		// have given up because of it: the record is not to blame, and is
		// processed again by whoever takes the task over.
		return perr
	}
	if policy == stream.PolicyDeadLetter {
		if err := t.deadLetter(rec, kind, perr); err != nil {
			return err
		}
	}
	if h := t.opts.hooks.BadRecord; h != nil {
		h(BadRecord{Task: t.id, Kind: kind, Policy: policy, Record: rec, Err: perr})
	}
	return nil
}

// deadLetter writes rec to the dead-letter topic with headers saying why.
func (t *Task) deadLetter(rec stream.RawRecord, kind string, perr *stream.ProcessError) error {
	if t.opts.dlqTopic == "" || t.opts.dlqPartitions <= 0 {
		return fmt.Errorf("engine: task %s: dead-letter policy without a dead-letter topic: %w", t.id, perr)
	}
	headers := make([]stream.Header, 0, len(rec.Headers)+8)
	for _, h := range rec.Headers {
		// A record read back from a dead-letter topic and failing again
		// is described afresh.
		if !strings.HasPrefix(h.Key, "samsa.dlq.") {
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		stream.Header{Key: stream.HeaderDLQError, Value: truncate(perr.Err.Error(), maxDLQError)},
		stream.Header{Key: stream.HeaderDLQKind, Value: []byte(kind)},
		stream.Header{Key: stream.HeaderDLQTopic, Value: []byte(rec.Topic)},
		stream.Header{Key: stream.HeaderDLQPartition, Value: strconv.AppendInt(nil, int64(rec.Partition), 10)},
		stream.Header{Key: stream.HeaderDLQOffset, Value: strconv.AppendInt(nil, rec.Offset, 10)},
		stream.Header{Key: stream.HeaderDLQTimestamp, Value: strconv.AppendInt(nil, rec.Timestamp.UnixMilli(), 10)},
		stream.Header{Key: stream.HeaderDLQTask, Value: []byte(t.id.String())},
	)
	var pe *stream.PanicError
	if errors.As(perr, &pe) {
		headers = append(headers, stream.Header{Key: stream.HeaderDLQStack, Value: truncate(string(pe.Stack), maxDLQStack)})
	}
	dl := stream.RawRecord{Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp, Headers: headers}
	if dl.Timestamp.UnixMilli() < 0 {
		dl.Timestamp = t.inst.StreamTime() // a record dead-lettered for its timestamp
	}
	if max := t.opts.limits[t.opts.dlqTopic]; max > 0 {
		if n := stream.RecordBatchSize(dl.Key, dl.Value, dl.Headers); n > max {
			return fmt.Errorf("engine: task %s: cannot dead-letter %s/%d@%d: %w (raise the topic's max.message.bytes); the record failed with: %w",
				t.id, rec.Topic, rec.Partition, rec.Offset,
				&stream.RecordTooLargeError{Topic: t.opts.dlqTopic, Size: n, Max: max}, perr)
		}
	}
	t.tc.out.Emit(t.opts.dlqTopic, rec.Partition%t.opts.dlqPartitions, dl)
	return nil
}

func truncate(s string, n int) []byte {
	if len(s) <= n {
		return []byte(s)
	}
	const more = "... (truncated)"
	return []byte(s[:n-len(more)] + more)
}

// A record's effects are held back until it has been processed: records
// it emits wait in held, drops it reports in drops, and its store writes
// are tracked by the stores (state.TaskStores.BeginRecord). If it fails,
// all are discarded.

// heldRecord is a record emitted by the record being processed.
type heldRecord struct {
	o         *output
	topic     string
	partition int32
	rec       stream.RawRecord
}

func (c *taskContext) begin() {
	c.inRecord = true
	if c.stores != nil {
		c.stores.BeginRecord()
	}
}

// release writes what the record emitted and keeps its store writes.
func (c *taskContext) release(t *Task) {
	c.inRecord = false
	for i := range c.held {
		h := &c.held[i]
		h.o.emitted++
		c.out.Emit(h.topic, h.partition, h.rec)
	}
	clear(c.held)
	c.held = c.held[:0]
	if c.stores != nil {
		c.stores.EndRecord()
	}
	if len(c.drops) > 0 {
		if c.onDropped != nil {
			for _, reason := range c.drops {
				c.onDropped(Dropped{Task: t.id, Reason: reason, Topic: t.cur.topic, Partition: t.cur.partition, Offset: t.cur.offset})
			}
		}
		c.drops = c.drops[:0]
	}
}

// discard forgets what the record emitted and undoes its store writes.
func (c *taskContext) discard() {
	c.inRecord = false
	clear(c.held)
	c.held = c.held[:0]
	if c.stores != nil {
		c.stores.RollbackRecord()
	}
	c.drops = c.drops[:0]
}
