package operators

import "github.com/samsa-go/samsa/stream"

// Map replaces each record's key and value with fn's result.
func Map[K, V, K2, V2 any](s stream.Stream[K, V], fn func(K, V) (K2, V2)) stream.Stream[K2, V2] {
	return stream.Via(s, "map", func(next stream.Processor[K2, V2]) stream.Processor[K, V] {
		return stream.ProcessorFunc[K, V](func(ctx stream.Context, r stream.Record[K, V]) error {
			k, v := fn(r.Key, r.Value)
			return next.Process(ctx, with(r, k, v))
		})
	})
}

// MapValues replaces each record's value with fn's result, keeping the key.
func MapValues[K, V, V2 any](s stream.Stream[K, V], fn func(V) V2) stream.Stream[K, V2] {
	return stream.Via(s, "map-values", func(next stream.Processor[K, V2]) stream.Processor[K, V] {
		return stream.ProcessorFunc[K, V](func(ctx stream.Context, r stream.Record[K, V]) error {
			return next.Process(ctx, with(r, r.Key, fn(r.Value)))
		})
	}, stream.KeepsKey())
}

// Filter keeps the records for which keep returns true.
func Filter[K, V any](s stream.Stream[K, V], keep func(K, V) bool) stream.Stream[K, V] {
	return stream.Via(s, "filter", func(next stream.Processor[K, V]) stream.Processor[K, V] {
		return stream.ProcessorFunc[K, V](func(ctx stream.Context, r stream.Record[K, V]) error {
			if !keep(r.Key, r.Value) {
				return nil
			}
			return next.Process(ctx, r)
		})
	}, stream.KeepsKey())
}

// FilterNot drops the records for which drop returns true.
func FilterNot[K, V any](s stream.Stream[K, V], drop func(K, V) bool) stream.Stream[K, V] {
	return Filter(s, func(k K, v V) bool { return !drop(k, v) })
}

// FlatMap replaces each record with the zero or more key/value pairs fn
// returns, in order.
func FlatMap[K, V, K2, V2 any](s stream.Stream[K, V], fn func(K, V) []stream.KeyValue[K2, V2]) stream.Stream[K2, V2] {
	return stream.Via(s, "flat-map", func(next stream.Processor[K2, V2]) stream.Processor[K, V] {
		return stream.ProcessorFunc[K, V](func(ctx stream.Context, r stream.Record[K, V]) error {
			for _, kv := range fn(r.Key, r.Value) {
				if err := next.Process(ctx, with(r, kv.Key, kv.Value)); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// FlatMapValues replaces each record with one record per value fn returns,
// in order, each with the original key.
func FlatMapValues[K, V, V2 any](s stream.Stream[K, V], fn func(V) []V2) stream.Stream[K, V2] {
	return stream.Via(s, "flat-map-values", func(next stream.Processor[K, V2]) stream.Processor[K, V] {
		return stream.ProcessorFunc[K, V](func(ctx stream.Context, r stream.Record[K, V]) error {
			for _, v := range fn(r.Value) {
				if err := next.Process(ctx, with(r, r.Key, v)); err != nil {
					return err
				}
			}
			return nil
		})
	}, stream.KeepsKey())
}

// Peek calls fn for each record and passes the record on unchanged. It is
// for side effects such as logging; fn must not modify the record.
func Peek[K, V any](s stream.Stream[K, V], fn func(K, V)) stream.Stream[K, V] {
	return stream.Via(s, "peek", func(next stream.Processor[K, V]) stream.Processor[K, V] {
		return stream.ProcessorFunc[K, V](func(ctx stream.Context, r stream.Record[K, V]) error {
			fn(r.Key, r.Value)
			return next.Process(ctx, r)
		})
	}, stream.KeepsKey())
}

// Branch splits s by predicates: a record goes to the stream of the first
// predicate it matches, and is dropped if it matches none. The result has
// one stream per predicate, in order. To keep the rest, end with a
// predicate that always returns true.
func Branch[K, V any](s stream.Stream[K, V], preds ...func(K, V) bool) []stream.Stream[K, V] {
	return stream.ViaN(s, "branch", len(preds), func(next []stream.Processor[K, V]) stream.Processor[K, V] {
		return stream.ProcessorFunc[K, V](func(ctx stream.Context, r stream.Record[K, V]) error {
			for i, pred := range preds {
				if pred(r.Key, r.Value) {
					return next[i].Process(ctx, r)
				}
			}
			return nil
		})
	}, stream.KeepsKey())
}

// Merge returns one stream with the records of all the given streams.
func Merge[K, V any](streams ...stream.Stream[K, V]) stream.Stream[K, V] {
	return stream.Merge(streams...)
}

// Process inserts a custom processor. newProcessor is called once per task
// with the processor to forward records to; the processor it returns may
// keep per-task state, forward zero or more records per input, and
// implement [stream.Initializer] and [stream.Closer].
func Process[K, V, K2, V2 any](s stream.Stream[K, V], newProcessor func(next stream.Processor[K2, V2]) stream.Processor[K, V]) stream.Stream[K2, V2] {
	return stream.Via(s, "process", newProcessor)
}

// with returns r with a new key and value, keeping its timestamp, headers
// and source coordinates.
func with[K, V, K2, V2 any](r stream.Record[K, V], k K2, v V2) stream.Record[K2, V2] {
	return stream.Record[K2, V2]{
		Key: k, Value: v, Timestamp: r.Timestamp, Headers: r.Headers,
		Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
	}
}
