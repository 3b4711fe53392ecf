package stream

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/samsa-go/samsa/stream/serde"
)

// Job is the graph of a stream-processing job: its input topics, the
// operators between them, and its output topics. Build it with [NewJob],
// [Input], the functions of package operators and [Output], then hand it
// to the runner. A Job is not safe for concurrent building; once built it
// is read-only and may be run by any number of tasks.
//
// Mistakes made while building (a bad topic name, a topic read twice, a
// nil function) do not panic: they are collected and reported together by
// [Job.Build].
type Job struct {
	name string

	mu struct {
		sync.Mutex
		built bool
	}

	nodes    []*node
	sources  map[string]*source    // by input topic
	outputs  map[string]*node      // by output topic, the first node writing it
	internal map[string]bool       // repartition topics, which the runner creates
	stores   map[string]*storeDecl // by store name
	errs     []error
	policy   errorPolicies // see policy.go

	globals map[string]*globalDecl // global tables by store name; see global.go
}

// storeDecl is a store and the node that uses it.
type storeDecl struct {
	spec   StoreSpec
	node   *node
	format [2]TextFormat // keys, values; see SetStoreFormat
}

// NewJob returns an empty job. The name identifies the job to Kafka: it is
// the consumer group's name and the prefix of the job's internal topics,
// so it must be a legal topic name and must not change between runs.
func NewJob(name string) *Job {
	j := &Job{
		name:     name,
		sources:  map[string]*source{},
		outputs:  map[string]*node{},
		internal: map[string]bool{},
		stores:   map[string]*storeDecl{},
	}
	if err := validName(name); err != nil {
		j.errorf("stream: job name: %w", err)
	}
	return j
}

// Name returns the job's name.
func (j *Job) Name() string { return j.name }

func (j *Job) errorf(format string, args ...any) {
	j.errs = append(j.errs, fmt.Errorf(format, args...))
}

func (j *Job) checkOpen(what string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.mu.built {
		j.errorf("stream: %s added after the job was built", what)
		return false
	}
	return true
}

// node is the untyped description of one vertex of the graph, used to
// derive sub-topologies and to describe the job.
type node struct {
	id      int
	kind    string
	name    string
	parents []*node
	inputs  []string // the topics a source or task reads
	outputs []string // the topics a sink or task writes
	stores  []string // the stores it uses
	timers  []string // the timer stores among them (see WithTimers)

	// How its keys are partitioned, for joins (see join.go).
	keySerde    any   // a source's key serde
	keepsKey    bool  // it forwards records under the key they came with
	copartition bool  // it needs its inputs partitioned alike
	keySerdes   []any // serdes it looks keys up with
}

func (j *Job) addStore(spec StoreSpec, n *node) {
	if err := validName(spec.Name); err != nil {
		j.errorf("stream: store name: %w", err)
		return
	}
	if prev, ok := j.stores[spec.Name]; ok {
		j.errorf("stream: store %q is declared twice (by %s and %s)", spec.Name, prev.node.name, n.name)
		return
	}
	j.stores[spec.Name] = &storeDecl{spec: spec, node: n}
	n.stores = append(n.stores, spec.Name)
}

func (j *Job) addNode(kind string, parents ...*node) *node {
	n := &node{id: len(j.nodes), kind: kind, parents: parents}
	n.name = fmt.Sprintf("%s-%d", kind, n.id)
	j.nodes = append(j.nodes, n)
	return n
}

// source is the entry point of one input topic.
type source struct {
	topic     string
	node      *node
	build     func(b *builder) Processor[[]byte, []byte]
	eventTime bool // its processor sets the event time (see EventTime)
}

func (j *Job) addSource(topic string, n *node, build func(b *builder) Processor[[]byte, []byte]) {
	if err := validName(topic); err != nil {
		j.errorf("stream: input topic: %w", err)
		return
	}
	if prev, ok := j.sources[topic]; ok {
		j.errorf("stream: topic %q is read twice (by %s and %s); read it once and share the stream", topic, prev.node.name, n.name)
		return
	}
	n.inputs = append(n.inputs, topic)
	j.sources[topic] = &source{topic: topic, node: n, build: build}
}

func (j *Job) addOutput(topic string, n *node) {
	if err := validName(topic); err != nil {
		j.errorf("stream: output topic: %w", err)
		return
	}
	n.outputs = append(n.outputs, topic)
	if _, ok := j.outputs[topic]; !ok {
		j.outputs[topic] = n
	}
}

// Stream is a typed, unbounded sequence of records inside a [Job]. It is a
// handle used while building the job: operators take streams and return
// new ones. The zero Stream is not usable.
type Stream[K, V any] struct{ p *port[K, V] }

// Job returns the job the stream belongs to.
func (s Stream[K, V]) Job() *Job { return s.port().job }

func (s Stream[K, V]) port() *port[K, V] {
	if s.p == nil {
		panic("stream: use of a zero Stream; streams come from stream.Input and operators")
	}
	return s.p
}

// port is where a stream's records go: the processors of every operator
// that consumes the stream, built once per task.
type port[K, V any] struct {
	job       *Job
	node      *node
	consumers []func(b *builder) Processor[K, V]
}

func newStream[K, V any](j *Job, n *node) Stream[K, V] {
	return Stream[K, V]{&port[K, V]{job: j, node: n}}
}

// build returns the processor that delivers this stream's records to all
// of its consumers in one task, building it on first use.
func (p *port[K, V]) build(b *builder) Processor[K, V] {
	if v, ok := b.memo[p]; ok {
		return v.(Processor[K, V])
	}
	var out Processor[K, V]
	switch len(p.consumers) {
	case 0:
		out = discard[K, V]{}
	case 1:
		out = p.consumers[0](b)
	default:
		fan := make(fanout[K, V], len(p.consumers))
		for i, c := range p.consumers {
			fan[i] = c(b)
		}
		out = fan
	}
	b.memo[p] = out
	return out
}

type discard[K, V any] struct{}

func (discard[K, V]) Process(Context, Record[K, V]) error { return nil }

// fanout delivers each record to every consumer, in the order the
// consumers were added to the job: a deterministic order.
type fanout[K, V any] []Processor[K, V]

func (f fanout[K, V]) Process(ctx Context, rec Record[K, V]) error {
	for _, p := range f {
		if err := p.Process(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}

// Input adds an input topic to the job and returns its records as a typed
// stream. Each record's key and value are decoded with the given serdes; a
// record that fails to decode stops its task with a [*DeserializeError].
// A topic can be an input of a job only once.
//
// A record's timestamp is its Kafka timestamp unless an [EventTime]
// option takes it from the record's content.
func Input[K, V any](j *Job, topic string, key serde.Serde[K], value serde.Serde[V], opts ...InputOption[K, V]) Stream[K, V] {
	var o inputOptions[K, V]
	for _, opt := range opts {
		opt(&o)
	}
	n := j.addNode("source")
	s := newStream[K, V](j, n)
	if !j.checkOpen("input " + topic) {
		return s
	}
	if key == nil || value == nil {
		j.errorf("stream: input %q: nil serde", topic)
	}
	n.keySerde = key
	j.addSource(topic, n, func(b *builder) Processor[[]byte, []byte] {
		return &decoder[K, V]{key: key, value: value, next: s.p.build(b), eventTime: o.eventTime, clock: b.clock}
	})
	if src := j.sources[topic]; src != nil && src.node == n {
		src.eventTime = o.eventTime != nil
	}
	return s
}

type decoder[K, V any] struct {
	key       serde.Serde[K]
	value     serde.Serde[V]
	next      Processor[K, V]
	eventTime func(K, V) time.Time // nil: the Kafka timestamp
	clock     *clock
}

func (d *decoder[K, V]) Process(ctx Context, raw RawRecord) error {
	k, err := d.key.Decode(raw.Key)
	if err != nil {
		return &DeserializeError{Topic: raw.Topic, Partition: raw.Partition, Offset: raw.Offset, Field: "key", Err: err}
	}
	v, err := d.value.Decode(raw.Value)
	if err != nil {
		return &DeserializeError{Topic: raw.Topic, Partition: raw.Partition, Offset: raw.Offset, Field: "value", Err: err}
	}
	ts := raw.Timestamp
	if d.eventTime != nil {
		if et := d.eventTime(k, v); !et.IsZero() {
			ts = et
		}
		d.clock.observe(ts)
	}
	return d.next.Process(ctx, Record[K, V]{
		Key: k, Value: v, Timestamp: ts, Headers: raw.Headers,
		Topic: raw.Topic, Partition: raw.Partition, Offset: raw.Offset,
	})
}

// Output writes every record of s to topic, encoding keys and values with
// the given serdes. The topic must exist when the job starts. Several
// streams may write the same topic.
func Output[K, V any](s Stream[K, V], topic string, key serde.Serde[K], value serde.Serde[V]) {
	p := s.port()
	j := p.job
	if !j.checkOpen("output " + topic) {
		return
	}
	if key == nil || value == nil {
		j.errorf("stream: output %q: nil serde", topic)
		return
	}
	n := j.addNode("sink", p.node)
	j.addOutput(topic, n)
	p.consumers = append(p.consumers, func(*builder) Processor[K, V] {
		return &encoder[K, V]{topic: topic, key: key, value: value}
	})
}

type encoder[K, V any] struct {
	topic string
	key   serde.Serde[K]
	value serde.Serde[V]
}

func (e *encoder[K, V]) Process(ctx Context, rec Record[K, V]) error {
	k, err := e.key.Encode(rec.Key)
	if err != nil {
		return &SerializeError{Topic: e.topic, Field: "key", Source: source3(rec), Err: err}
	}
	v, err := e.value.Encode(rec.Value)
	if err != nil {
		return &SerializeError{Topic: e.topic, Field: "value", Source: source3(rec), Err: err}
	}
	return ctx.Emit(e.topic, RawRecord{Key: k, Value: v, Timestamp: rec.Timestamp, Headers: rec.Headers})
}

func source3[K, V any](rec Record[K, V]) string {
	if rec.Topic == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d@%d", rec.Topic, rec.Partition, rec.Offset)
}

// Via adds a processor downstream of s and returns the stream of what that
// processor forwards. It is the building block of package operators and
// of custom operators: newProcessor is called once per task with the
// processor to forward to, so the processor it returns may keep per-task
// state. If the returned processor implements [Initializer] or
// [io.Closer]-like Close() error, it is initialised before the task's first
// record and closed when the task stops.
func Via[K, V, K2, V2 any](s Stream[K, V], kind string, newProcessor func(next Processor[K2, V2]) Processor[K, V], opts ...NodeOption) Stream[K2, V2] {
	outs := ViaN(s, kind, 1, func(next []Processor[K2, V2]) Processor[K, V] { return newProcessor(next[0]) }, opts...)
	return outs[0]
}

// NodeOption configures a node added with [Via] or [ViaN].
type NodeOption func(*nodeOptions)

type nodeOptions struct {
	stores      []StoreSpec
	timers      []string // timer stores (see WithTimers)
	keepsKey    bool
	copartition bool
	keySerdes   []any
}

// apply sets what the options say about the node itself.
func (o *nodeOptions) apply(n *node) {
	n.keepsKey = o.keepsKey
	n.copartition = o.copartition
	n.keySerdes = o.keySerdes
}

// WithStores declares the stores a node's processor uses through
// [Context.Store]. Each store belongs to the node's sub-topology and has a
// changelog topic the runner creates.
func WithStores(specs ...StoreSpec) NodeOption {
	return func(o *nodeOptions) { o.stores = append(o.stores, specs...) }
}

// ViaN is [Via] for a processor with n output streams, such as a branch.
// The processor receives the n downstream processors in order.
func ViaN[K, V, K2, V2 any](s Stream[K, V], kind string, n int, newProcessor func(next []Processor[K2, V2]) Processor[K, V], opts ...NodeOption) []Stream[K2, V2] {
	p := s.port()
	j := p.job
	op := j.addNode(kind, p.node)
	var o nodeOptions
	for _, opt := range opts {
		opt(&o)
	}
	o.apply(op)
	for _, spec := range o.stores {
		j.addStore(spec, op)
	}
	for _, name := range o.timers {
		j.addStore(StoreSpec{Name: name}, op)
		op.timers = append(op.timers, name)
	}
	outs := make([]Stream[K2, V2], n)
	for i := range outs {
		outs[i] = newStream[K2, V2](j, op)
		if n > 1 {
			// Each branch is a node of its own, so it can be described.
			outs[i].p.node = j.addNode(fmt.Sprintf("%s-out%d", kind, i), op)
			outs[i].p.node.keepsKey = o.keepsKey
		}
	}
	if !j.checkOpen(kind) {
		return outs
	}
	if newProcessor == nil {
		j.errorf("stream: %s: nil processor constructor", op.name)
		return outs
	}
	p.consumers = append(p.consumers, func(b *builder) Processor[K, V] {
		if v, ok := b.memo[op]; ok {
			return v.(Processor[K, V])
		}
		next := make([]Processor[K2, V2], n)
		for i, o := range outs {
			next[i] = o.p.build(b)
		}
		proc := newProcessor(next)
		b.memo[op] = proc
		b.track(proc)
		b.own(op, proc)
		return proc
	})
	return outs
}

// Merge returns one stream of the records of all the given streams. Within
// a task, records keep the order in which their inputs deliver them.
func Merge[K, V any](streams ...Stream[K, V]) Stream[K, V] {
	if len(streams) == 0 {
		panic("stream: Merge of no streams")
	}
	j := streams[0].port().job
	parents := make([]*node, len(streams))
	for i, s := range streams {
		parents[i] = s.port().node
		if s.p.job != j {
			j.errorf("stream: Merge of streams from different jobs (%q and %q)", j.name, s.p.job.name)
		}
	}
	n := j.addNode("merge", parents...)
	n.keepsKey = true
	merged := newStream[K, V](j, n)
	if !j.checkOpen("merge") {
		return merged
	}
	for _, s := range streams {
		s.p.consumers = append(s.p.consumers, merged.p.build)
	}
	return merged
}

// ErrInvalidName is wrapped by errors about job and topic names.
var ErrInvalidName = errors.New("not a legal Kafka topic name")

// validName reports whether name is a legal Kafka topic name: 1 to 249
// characters of [a-zA-Z0-9._-], and not "." or "..".
func validName(name string) error {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return fmt.Errorf("%q: %w (1-249 of [a-zA-Z0-9._-])", name, ErrInvalidName)
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("%q: %w (1-249 of [a-zA-Z0-9._-])", name, ErrInvalidName)
		}
	}
	return nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// AddError records a mistake found while building the job, to be reported
// by [Job.Build]. It is for authors of operators.
func (j *Job) AddError(err error) {
	if err != nil {
		j.errs = append(j.errs, err)
	}
}
