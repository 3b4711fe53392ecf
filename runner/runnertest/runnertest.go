// Package runnertest runs a job in-process, without a broker, for unit
// tests: pipe records into the job's input topics and read what it wrote
// to its output topics, partition by partition. The records go through
// the same task code the runner uses (package-internal engine), with the
// same partitioning of outputs, so what a test sees is what production
// does, minus Kafka.
//
// A Driver processes each record synchronously, inside Pipe. It is not
// safe for concurrent use.
package runnertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/memstore"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Option configures a Driver.
type Option func(*Driver)

// Partitions sets the partition count of a topic, overriding the default
// of 1. Input topics of one sub-topology must agree, as on a broker.
func Partitions(topic string, n int32) Option {
	return func(d *Driver) { d.partitions[topic] = n }
}

// Driver runs a job in-process.
type Driver struct {
	topo       *stream.Topology
	partitions map[string]int32
	tasks      map[stream.TaskID]*driverTask
	queue      []stream.RawRecord              // records written to repartition topics, to process next
	logs       map[string][][]stream.RawRecord // topic -> partition -> records
	clock      time.Time
	keyed      kgo.TopicPartitioner
	scratch    kgo.Record
	closed     bool
	policy     driverPolicy // see policy.go
	joins      driverJoins  // see global.go
}

// New builds the job and returns a driver for it.
func New(job *stream.Job, opts ...Option) (*Driver, error) {
	topo, err := job.Build()
	if err != nil {
		return nil, err
	}
	d := &Driver{
		topo:       topo,
		partitions: map[string]int32{},
		tasks:      map[stream.TaskID]*driverTask{},
		logs:       map[string][][]stream.RawRecord{},
		clock:      time.UnixMilli(0).UTC(),
		keyed:      kgo.StickyKeyPartitioner(nil).ForTopic(""),
		policy:     driverPolicy{limits: map[string]int{}, dropped: map[string]int{}},
	}
	for _, o := range opts {
		o(d)
	}
	for _, t := range append(topo.Inputs(), topo.Outputs()...) {
		n := d.partitions[t]
		if n == 0 {
			n = 1
		} else if n < 0 {
			return nil, fmt.Errorf("runnertest: topic %q: %d partitions", t, n)
		}
		d.partitions[t] = n
	}
	for _, it := range topo.Internal() {
		delete(d.partitions, it.Name) // derived, never set by hand
	}
	engine.ResolveInternal(topo, d.partitions)
	d.resolvePolicy()
	for t, n := range d.partitions {
		d.logs[t] = make([][]stream.RawRecord, n)
	}
	if err := engine.CheckCopartitioned(topo, d.partitions); err != nil {
		return nil, fmt.Errorf("runnertest: %w", err)
	}
	d.openGlobals()
	return d, nil
}

// Topology returns the job's topology.
func (d *Driver) Topology() *stream.Topology { return d.topo }

// Pipe appends rec to partition rec.Partition of an input topic and
// processes it. If it fails, the job's error policy applies as in the
// runner (see [OnDeserializeError], [OnProcessError]): under fail Pipe
// returns the task's error; records skipped or dead-lettered are listed
// by [Driver.BadRecords]. Pipe assigns the record's Offset; a zero
// Timestamp takes the driver's clock (see [Driver.SetTime]). Use
// [Driver.PartitionFor] to partition by key as a producer would.
func (d *Driver) Pipe(topic string, rec stream.RawRecord) error {
	if d.closed {
		return errors.New("runnertest: driver closed")
	}
	if g, ok := d.topo.GlobalTable(topic); ok {
		return d.pipeGlobal(g, rec)
	}
	sub, ok := d.topo.SubtopologyOf(topic)
	if !ok {
		return fmt.Errorf("runnertest: %q is not an input topic of job %q", topic, d.topo.Name())
	}
	log := d.logs[topic]
	if rec.Partition < 0 || int(rec.Partition) >= len(log) {
		return fmt.Errorf("runnertest: %s has %d partitions, not partition %d", topic, len(log), rec.Partition)
	}
	rec.Topic = topic
	rec.Offset = int64(len(log[rec.Partition]))
	rec.Key, rec.Value = clone(rec.Key), clone(rec.Value) // the job may keep or modify them
	if rec.Timestamp.IsZero() {
		rec.Timestamp = d.clock
	}
	log[rec.Partition] = append(log[rec.Partition], rec)
	if err := d.process(sub.ID, rec); err != nil {
		return err
	}
	return d.drain()
}

// drain processes the records written to repartition topics: they are
// read back at once, in the order they were written.
func (d *Driver) drain() error {
	for len(d.queue) > 0 {
		r := d.queue[0]
		d.queue = d.queue[1:]
		sub, _ := d.topo.SubtopologyOf(r.Topic)
		if err := d.process(sub.ID, r); err != nil {
			return err
		}
	}
	return nil
}

// driverTask is a task of the driver with its in-memory stores.
type driverTask struct {
	*engine.Task
	stores *state.TaskStores
}

// process runs rec through its task, then commits the task: its store
// changes go to the changelog topics, as the runner does at a commit.
func (d *Driver) process(sub int, rec stream.RawRecord) error {
	id := stream.TaskID{Subtopology: sub, Partition: rec.Partition}
	t := d.tasks[id]
	if t == nil {
		var err error
		if t, err = d.newTask(id); err != nil {
			return err
		}
		d.tasks[id] = t
	}
	if err := t.Process(rec); err != nil {
		return err
	}
	return d.commit(id, t)
}

// commit commits task id as the runner does: processors that hold records
// back flush them, and the stores' changes go to their changelog topics.
func (d *Driver) commit(id stream.TaskID, t *driverTask) error {
	if err := t.Flush(); err != nil {
		return err
	}
	if t.stores != nil {
		t.stores.Flush()
		offsets := map[string]int64{}
		for _, s := range t.stores.Stores() {
			offsets[s.Name()] = int64(len(d.logs[d.topo.ChangelogTopic(s.Name())][id.Partition]))
		}
		return t.stores.Apply(offsets)
	}
	return nil
}

func (d *Driver) newTask(id stream.TaskID) (*driverTask, error) {
	t := &driverTask{}
	if specs := d.topo.Subtopologies()[id.Subtopology].Stores; len(specs) > 0 {
		t.stores = state.NewTaskStores(memstore.New(), changelog{d, id.Partition}, specs, 1<<20)
	}
	et, err := engine.NewTask(context.Background(), d.topo, id, d, d.partitions, t.stores, append(d.taskOptions(), d.joinOptions()...)...)
	if err != nil {
		return nil, err
	}
	if err := et.Init(); err != nil {
		return nil, err
	}
	t.Task = et
	return t, nil
}

// changelog writes a task's changelog records to the driver's topics.
type changelog struct {
	d         *Driver
	partition int32
}

func (c changelog) Write(store string, key, value []byte) {
	topic := c.d.topo.ChangelogTopic(store)
	if _, ok := c.d.logs[topic]; ok {
		c.d.append(topic, c.partition, stream.RawRecord{Key: key, Value: value, Timestamp: c.d.clock})
	}
}

// Store returns the store name of the task for partition p of the
// sub-topology that holds it, for tests to inspect state. It returns nil
// if the task has not seen a record yet.
func (d *Driver) Store(name string, p int32) stream.Store {
	for id, t := range d.tasks {
		if id.Partition == p && t.stores != nil {
			if s := t.stores.Store(name); s != nil {
				return s
			}
		}
	}
	return nil
}

// PartitionFor returns the partition a producer using Kafka's default
// partitioner would write key to: murmur2 of the key, or partition 0 for a
// nil key.
func (d *Driver) PartitionFor(topic string, key []byte) int32 {
	n := d.partitions[topic]
	if key == nil || n <= 1 {
		return 0
	}
	d.scratch.Key = key
	return int32(d.keyed.Partition(&d.scratch, int(n)))
}

// SetTime sets the driver's clock, which stands for the wall clock: it is
// the timestamp given to piped records that have none, and the time of
// wall-clock timers (stream.WallClockTimer). Those due at t fire, task
// by task, and what they write is processed like the output of a piped
// record. It returns the first error of a timer. Stream time is separate:
// it follows the timestamps of the records piped.
func (d *Driver) SetTime(t time.Time) error {
	if d.closed {
		return errors.New("runnertest: driver closed")
	}
	d.clock = t
	for _, id := range slices.SortedFunc(maps.Keys(d.tasks), compareTaskID) {
		task := d.tasks[id]
		if err := task.FireWallClock(t); err != nil {
			return err
		}
		if err := d.commit(id, task); err != nil {
			return err
		}
	}
	return d.drain()
}

// Emit implements the engine's emitter: it appends to the output log, and
// queues records written to a topic the job reads (a repartition topic).
func (d *Driver) Emit(topic string, partition int32, rec stream.RawRecord) {
	rec = d.append(topic, partition, rec)
	if _, ok := d.topo.SubtopologyOf(topic); ok {
		d.queue = append(d.queue, rec)
	}
}

func (d *Driver) append(topic string, partition int32, rec stream.RawRecord) stream.RawRecord {
	log := d.logs[topic]
	rec.Topic = topic
	rec.Partition = partition
	rec.Offset = int64(len(log[partition]))
	log[partition] = append(log[partition], rec)
	return rec
}

// Records returns the records written to partition p of topic, in offset
// order. The slice is the caller's; the byte slices in it are shared with
// the driver and must not be modified.
func (d *Driver) Records(topic string, p int32) []stream.RawRecord {
	log := d.logs[topic]
	if p < 0 || int(p) >= len(log) {
		return nil
	}
	return slices.Clone(log[p])
}

// AllRecords returns the records of every partition of topic, partition
// by partition, each in offset order.
func (d *Driver) AllRecords(topic string) []stream.RawRecord {
	var out []stream.RawRecord
	for _, part := range d.logs[topic] {
		out = append(out, part...)
	}
	return out
}

// Close closes every task's processors and returns their errors joined.
func (d *Driver) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for _, id := range slices.SortedFunc(maps.Keys(d.tasks), compareTaskID) {
		errs = append(errs, d.tasks[id].Close())
	}
	if d.joins.globals != nil {
		errs = append(errs, d.joins.globals.Close())
	}
	return errors.Join(errs...)
}

// Input is a typed handle on an input topic.
type Input[K, V any] struct {
	d     *Driver
	topic string
	key   serde.Serde[K]
	value serde.Serde[V]
}

// NewInput returns a typed handle on an input topic of d.
func NewInput[K, V any](d *Driver, topic string, key serde.Serde[K], value serde.Serde[V]) *Input[K, V] {
	return &Input[K, V]{d: d, topic: topic, key: key, value: value}
}

// RecordOption sets a property of a piped record.
type RecordOption func(*piped)

type piped struct {
	rec         stream.RawRecord
	partitioned bool // the partition was chosen, not hashed from the key
}

// At sets the record's timestamp.
func At(t time.Time) RecordOption { return func(p *piped) { p.rec.Timestamp = t } }

// ToPartition sends the record to partition p instead of the partition
// its key hashes to.
func ToPartition(p int32) RecordOption {
	return func(pp *piped) { pp.rec.Partition, pp.partitioned = p, true }
}

// WithHeaders sets the record's headers.
func WithHeaders(h ...stream.Header) RecordOption { return func(p *piped) { p.rec.Headers = h } }

// Pipe encodes key and value and pipes them in. By default the record goes
// to the partition its key hashes to, as with a Kafka producer.
func (in *Input[K, V]) Pipe(key K, value V, opts ...RecordOption) error {
	k, err := in.key.Encode(key)
	if err != nil {
		return fmt.Errorf("runnertest: encode key for %s: %w", in.topic, err)
	}
	v, err := in.value.Encode(value)
	if err != nil {
		return fmt.Errorf("runnertest: encode value for %s: %w", in.topic, err)
	}
	p := piped{rec: stream.RawRecord{Key: k, Value: v}}
	for _, o := range opts {
		o(&p)
	}
	if !p.partitioned {
		p.rec.Partition = in.d.PartitionFor(in.topic, k)
	}
	return in.d.Pipe(in.topic, p.rec)
}

// Output is a typed handle on an output topic.
type Output[K, V any] struct {
	d     *Driver
	topic string
	key   serde.Serde[K]
	value serde.Serde[V]
}

// NewOutput returns a typed handle on an output topic of d.
func NewOutput[K, V any](d *Driver, topic string, key serde.Serde[K], value serde.Serde[V]) *Output[K, V] {
	return &Output[K, V]{d: d, topic: topic, key: key, value: value}
}

// Partition returns the decoded records of partition p, in offset order.
func (o *Output[K, V]) Partition(p int32) ([]stream.Record[K, V], error) {
	return o.decode(o.d.Records(o.topic, p))
}

// Records returns the decoded records of all partitions, partition by
// partition.
func (o *Output[K, V]) Records() ([]stream.Record[K, V], error) {
	return o.decode(o.d.AllRecords(o.topic))
}

// KeyValues returns the keys and values of all partitions, partition by
// partition.
func (o *Output[K, V]) KeyValues() ([]stream.KeyValue[K, V], error) {
	recs, err := o.Records()
	if err != nil {
		return nil, err
	}
	kvs := make([]stream.KeyValue[K, V], len(recs))
	for i, r := range recs {
		kvs[i] = stream.KV(r.Key, r.Value)
	}
	return kvs, nil
}

func (o *Output[K, V]) decode(raws []stream.RawRecord) ([]stream.Record[K, V], error) {
	out := make([]stream.Record[K, V], len(raws))
	for i, r := range raws {
		k, err := o.key.Decode(r.Key)
		if err != nil {
			return nil, fmt.Errorf("runnertest: decode key of %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		v, err := o.value.Decode(r.Value)
		if err != nil {
			return nil, fmt.Errorf("runnertest: decode value of %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		out[i] = stream.Record[K, V]{Key: k, Value: v, Timestamp: r.Timestamp, Headers: r.Headers,
			Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	}
	return out, nil
}

func compareTaskID(a, b stream.TaskID) int {
	if a.Subtopology != b.Subtopology {
		return a.Subtopology - b.Subtopology
	}
	return int(a.Partition - b.Partition)
}

// clone copies b, keeping nil nil.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}
