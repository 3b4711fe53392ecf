package stream

import (
	"fmt"

	"github.com/samsa-go/samsa/stream/serde"
)

// Change is one update of a [Table]: a key's new value, or its deletion.
type Change[V any] struct {
	Value   V
	Deleted bool
}

// Table is a typed, changing key-value relation kept in a store: the
// latest value of each key. Tables come from aggregations (package
// operators) and from compacted topics ([TableInput]). A table's
// [Table.Changes] are its updates as a stream.
type Table[K, V any] struct {
	changes Stream[K, Change[V]]
	store   string
	key     serde.Serde[K]
	value   serde.Serde[V]
}

// NewTable returns a table whose updates are changes, kept in store with
// the given serdes. It is for authors of operators that maintain tables.
func NewTable[K, V any](changes Stream[K, Change[V]], store string, key serde.Serde[K], value serde.Serde[V]) Table[K, V] {
	SetStoreFormat(changes.Job(), store, key, value)
	return Table[K, V]{changes: changes, store: store, key: key, value: value}
}

// Changes returns every update of the table, deletions included, in the
// order they happen.
func (t Table[K, V]) Changes() Stream[K, Change[V]] { return t.changes }

// ToStream returns the table's new values as a stream, without deletions.
func (t Table[K, V]) ToStream() Stream[K, V] {
	return Via(t.changes, "to-stream", func(next Processor[K, V]) Processor[K, Change[V]] {
		return ProcessorFunc[K, Change[V]](func(ctx Context, r Record[K, Change[V]]) error {
			if r.Value.Deleted {
				return nil
			}
			return next.Process(ctx, Record[K, V]{Key: r.Key, Value: r.Value.Value, Timestamp: r.Timestamp,
				Headers: r.Headers, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
		})
	}, KeepsKey())
}

// Store returns the name of the store holding the table.
func (t Table[K, V]) Store() string { return t.store }

// KeySerde and ValueSerde return the table's serdes.
func (t Table[K, V]) KeySerde() serde.Serde[K]   { return t.key }
func (t Table[K, V]) ValueSerde() serde.Serde[V] { return t.value }

// OutputTable writes the table's updates to topic: new values as records,
// deletions as tombstones (null values), so a compacted topic holds the
// table.
func OutputTable[K, V any](t Table[K, V], topic string, key serde.Serde[K], value serde.Serde[V]) {
	nulls := serde.Funcs(
		func(c Change[V]) ([]byte, error) {
			if c.Deleted {
				return nil, nil
			}
			return value.Encode(c.Value)
		},
		func([]byte) (Change[V], error) {
			return Change[V]{}, fmt.Errorf("stream: OutputTable serde does not decode")
		},
	)
	Output(t.changes, topic, key, nulls)
}

// mirror is implemented by the stores of tables read from topics.
type mirror interface {
	Mirror(key, value []byte)
}

// TableInput reads a topic as a table: each record sets its key's value, a
// tombstone deletes the key. The table's store, named after the topic,
// uses the topic itself as its changelog: restoring it reads the topic,
// and no second copy is written. The topic should be compacted.
func TableInput[K, V any](j *Job, topic string, key serde.Serde[K], value serde.Serde[V]) Table[K, V] {
	n := j.addNode("table-source")
	changes := newStream[K, Change[V]](j, n)
	t := Table[K, V]{changes: changes, store: topic, key: key, value: value}
	if !j.checkOpen("table " + topic) {
		return t
	}
	if key == nil || value == nil {
		j.errorf("stream: table %q: nil serde", topic)
		return t
	}
	n.keySerde = key
	j.addStore(StoreSpec{Name: topic, Changelog: topic}, n)
	SetStoreFormat(j, topic, key, value)
	j.addSource(topic, n, func(b *builder) Processor[[]byte, []byte] {
		src := &tableSource[K, V]{store: topic, key: key, value: value, next: changes.p.build(b)}
		b.track(src)
		return src
	})
	return t
}

type tableSource[K, V any] struct {
	store string
	key   serde.Serde[K]
	value serde.Serde[V]
	next  Processor[K, Change[V]]
	m     mirror
}

func (s *tableSource[K, V]) Init(ctx Context) error {
	st, err := ctx.Store(s.store)
	if err != nil {
		return err
	}
	m, ok := st.(mirror)
	if !ok {
		return fmt.Errorf("stream: store %q cannot mirror a topic", s.store)
	}
	s.m = m
	return nil
}

// Process mirrors a record of the topic into the table's store and
// forwards the change. A record with a null key is no row of a table: it
// is dropped (reason "null key"; brokers refuse such records on compacted
// topics anyway). The store holds the topic as it is, as a restore from
// the topic would: a record whose key or value does not decode is still
// mirrored, and only its change fails to decode.
func (s *tableSource[K, V]) Process(ctx Context, raw RawRecord) error {
	if raw.Key == nil {
		ctx.Dropped("null key")
		return nil
	}
	s.m.Mirror(raw.Key, raw.Value)
	k, err := s.key.Decode(raw.Key)
	if err != nil {
		return &DeserializeError{Topic: raw.Topic, Partition: raw.Partition, Offset: raw.Offset, Field: "key", Err: err}
	}
	c := Change[V]{Deleted: raw.Value == nil}
	if !c.Deleted {
		if c.Value, err = s.value.Decode(raw.Value); err != nil {
			return &DeserializeError{Topic: raw.Topic, Partition: raw.Partition, Offset: raw.Offset, Field: "value", Err: err}
		}
	}
	return s.next.Process(ctx, Record[K, Change[V]]{Key: k, Value: c, Timestamp: raw.Timestamp, Headers: raw.Headers,
		Topic: raw.Topic, Partition: raw.Partition, Offset: raw.Offset})
}

// Repartition writes s to the internal topic "<job>-<name>-repartition",
// partitioned by key, and returns the stream read back from it: every
// record of a key then reaches the same task. The write and the read are
// in different sub-topologies, which the runner schedules as separate
// tasks. The topic gets the largest partition count among the inputs of
// the sub-topology that writes it.
func Repartition[K, V any](s Stream[K, V], name string, key serde.Serde[K], value serde.Serde[V]) Stream[K, V] {
	j := s.Job()
	topic := j.name + "-" + name + "-repartition"
	Output(s, topic, key, value)
	j.internal[topic] = true
	return Input(j, topic, key, value)
}
