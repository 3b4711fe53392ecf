package operators

import (
	"fmt"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Grouped is a stream whose records are grouped by key, ready for
// aggregation: every record of a key reaches the same task. It carries the
// serdes its aggregations store keys and values with.
type Grouped[K, V any] struct {
	s     stream.Stream[K, V]
	key   serde.Serde[K]
	value serde.Serde[V]
}

// GroupByKey groups s by its current key. The stream must already be
// partitioned by that key (it is, if the key is the key of the input
// topic as its producer partitioned it); otherwise use [GroupBy].
func GroupByKey[K, V any](s stream.Stream[K, V], key serde.Serde[K], value serde.Serde[V]) Grouped[K, V] {
	return Grouped[K, V]{s: s, key: key, value: value}
}

// KeyBy gives each record the key fn returns and repartitions the stream
// by it through the internal topic "<job>-<name>-repartition", so that all
// records of a key reach one task. The job splits there into two
// sub-topologies.
func KeyBy[K, V, K2 any](s stream.Stream[K, V], name string, fn func(K, V) K2, key serde.Serde[K2], value serde.Serde[V]) stream.Stream[K2, V] {
	rekeyed := Map(s, func(k K, v V) (K2, V) { return fn(k, v), v })
	return stream.Repartition(rekeyed, name, key, value)
}

// GroupBy re-keys s with fn, repartitions it (see [KeyBy]) and groups it.
func GroupBy[K, V, K2 any](s stream.Stream[K, V], name string, fn func(K, V) K2, key serde.Serde[K2], value serde.Serde[V]) Grouped[K2, V] {
	return GroupByKey(KeyBy(s, name, fn, key, value), key, value)
}

// Aggregate folds the records of each key into an aggregate kept in the
// store name: init gives a key's first aggregate, add folds in a record.
// The result is a table; each update is a record of its Changes.
//
// As in Kafka Streams, a record with a null key (one the key serde
// encodes to nil) or a null value (a nil []byte value: a tombstone read
// with serde.Bytes) is dropped and counted (stream.Context.Dropped, reasons
// "null key" and "null value"): it belongs to no key, and a stream's
// tombstone deletes nothing. Note that serde.String reads a null as "",
// which is an ordinary key or value.
func Aggregate[K, V, A any](g Grouped[K, V], name string, init func() A, add func(K, V, A) A, agg serde.Serde[A]) stream.Table[K, A] {
	changes := stream.Via(g.s, "aggregate", func(next stream.Processor[K, stream.Change[A]]) stream.Processor[K, V] {
		return &aggregator[K, V, A]{name: name, key: g.key, agg: agg, init: init, add: add, next: next}
	}, stream.WithStores(stream.StoreSpec{Name: name}), stream.KeepsKey())
	return stream.NewTable(changes, name, g.key, agg)
}

// Reduce combines the records of each key with fn, the first record of a
// key being its first value. Records with a null key or value are dropped,
// as in [Aggregate].
func Reduce[K, V any](g Grouped[K, V], name string, fn func(acc, v V) V) stream.Table[K, V] {
	changes := stream.Via(g.s, "reduce", func(next stream.Processor[K, stream.Change[V]]) stream.Processor[K, V] {
		return &aggregator[K, V, V]{name: name, key: g.key, agg: g.value, reduce: fn, next: next}
	}, stream.WithStores(stream.StoreSpec{Name: name}), stream.KeepsKey())
	return stream.NewTable(changes, name, g.key, g.value)
}

// Count counts the records of each key. Records with a null key or value
// are dropped, as in [Aggregate].
func Count[K, V any](g Grouped[K, V], name string) stream.Table[K, int64] {
	return Aggregate(g, name, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 }, serde.Int64)
}

// aggregator is the processor of Aggregate, Reduce and Count.
type aggregator[K, V, A any] struct {
	name   string
	key    serde.Serde[K]
	agg    serde.Serde[A]
	init   func() A
	add    func(K, V, A) A
	reduce func(A, V) A // Reduce: A is V
	next   stream.Processor[K, stream.Change[A]]
	store  *state.KeyValue[K, A]
	bytesV bool // V is []byte, so a value may be a Kafka null
}

func (a *aggregator[K, V, A]) Init(ctx stream.Context) error {
	s, err := ctx.Store(a.name)
	if err != nil {
		return err
	}
	a.store = state.Typed(s, a.key, a.agg)
	_, a.bytesV = any(*new(V)).([]byte)
	return nil
}

func (a *aggregator[K, V, A]) Process(ctx stream.Context, r stream.Record[K, V]) error {
	kb, err := a.key.Encode(r.Key)
	if err != nil {
		return fmt.Errorf("%s: encode key: %w", a.name, err)
	}
	if kb == nil {
		ctx.Dropped("null key")
		return nil
	}
	if a.bytesV && any(r.Value).([]byte) == nil {
		ctx.Dropped("null value")
		return nil
	}
	cur, found, err := a.store.GetEncoded(kb)
	if err != nil {
		return fmt.Errorf("%s: %w", a.name, err)
	}
	switch {
	case a.reduce != nil && !found:
		cur = any(r.Value).(A)
	case a.reduce != nil:
		cur = a.reduce(cur, r.Value)
	default:
		if !found {
			cur = a.init()
		}
		cur = a.add(r.Key, r.Value, cur)
	}
	if err := a.store.PutEncoded(kb, cur); err != nil {
		return fmt.Errorf("%s: %w", a.name, err)
	}
	return a.next.Process(ctx, stream.Record[K, stream.Change[A]]{
		Key: r.Key, Value: stream.Change[A]{Value: cur}, Timestamp: r.Timestamp, Headers: r.Headers,
		Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
	})
}

// ToStreamOnCommit is [stream.Table.ToStream] with output caching, for
// tables that change often: instead of one record per update, each commit
// emits the latest value of every key that changed since the previous
// commit, in the order the keys first changed. Deletions are dropped, as
// in ToStream. The final values are the same as ToStream's, but how
// updates collapse depends on when commits happen, so the output is not a
// function of the input log alone: use ToStream where that matters. (The
// in-process test driver commits after every record.)
func ToStreamOnCommit[K, V any](t stream.Table[K, V]) stream.Stream[K, V] {
	return stream.Via(t.Changes(), "to-stream-on-commit", func(next stream.Processor[K, V]) stream.Processor[K, stream.Change[V]] {
		return &commitCache[K, V]{key: t.KeySerde(), next: next, index: map[string]int{}}
	}, stream.KeepsKey())
}

// commitCache holds a table's latest changes until the task commits.
type commitCache[K, V any] struct {
	key   serde.Serde[K]
	next  stream.Processor[K, V]
	index map[string]int // encoded key -> position in held
	held  []stream.Record[K, stream.Change[V]]
}

func (c *commitCache[K, V]) Process(_ stream.Context, r stream.Record[K, stream.Change[V]]) error {
	kb, err := c.key.Encode(r.Key)
	if err != nil {
		return fmt.Errorf("to-stream-on-commit: encode key: %w", err)
	}
	if i, ok := c.index[string(kb)]; ok {
		c.held[i] = r
		return nil
	}
	c.index[string(kb)] = len(c.held)
	c.held = append(c.held, r)
	return nil
}

func (c *commitCache[K, V]) Flush(ctx stream.Context) error {
	for _, r := range c.held {
		if r.Value.Deleted {
			continue
		}
		if err := c.next.Process(ctx, stream.Record[K, V]{Key: r.Key, Value: r.Value.Value, Timestamp: r.Timestamp,
			Headers: r.Headers, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}); err != nil {
			return err
		}
	}
	clear(c.index)
	clear(c.held)
	c.held = c.held[:0]
	return nil
}
