package operators

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/samsa-go/samsa/state/window"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Dedupe drops records whose key was seen within the given span of event
// time, keeping the first: a record passes unless a record with the same
// key passed no more than within before or after it (by timestamp). The
// keys that passed are remembered, with their timestamps, in the store
// name until stream time is more than within past them. The stream must be
// partitioned by key (see [KeyBy]).
func Dedupe[K, V any](s stream.Stream[K, V], name string, within time.Duration, key serde.Serde[K]) stream.Stream[K, V] {
	return DedupeBy(s, name, within, func(k K, _ V) K { return k }, key)
}

// DedupeBy is [Dedupe] by an ID that id extracts from each record, such
// as an event ID in the value: a record passes unless a record with the
// same ID passed within the span. Records with equal IDs must reach the
// same task: partition the stream by something the ID determines (the ID
// itself, with [KeyBy], is the usual choice).
//
// Duplicates are dropped silently: they are what the operator is for.
// Like every window, a record far behind stream time is compared only
// with the IDs still remembered: one that arrives more than within after
// stream time passed its duplicate is not recognised, and passes.
func DedupeBy[K, V, ID any](s stream.Stream[K, V], name string, within time.Duration, id func(K, V) ID, idSerde serde.Serde[ID]) stream.Stream[K, V] {
	if within <= 0 || within%time.Millisecond != 0 {
		s.Job().AddError(fmt.Errorf("operators: dedupe %q: span %s: want a positive whole number of milliseconds", name, within))
	}
	out := stream.Via(s, "dedupe", func(next stream.Processor[K, V]) stream.Processor[K, V] {
		return &deduper[K, V, ID]{name: name, within: within.Milliseconds(), id: id, idSerde: idSerde, next: next}
	}, stream.WithStores(stream.StoreSpec{Name: name}))
	dedupeStoreFormat(s.Job(), name, idSerde)
	return out
}

// deduper is the processor of Dedupe. Its store holds, per ID that
// passed, the timestamp of the record that passed, and an index by that
// timestamp for expiry:
//
//	'i' | id         -> time (8 bytes, window.AppendTime)
//	'x' | time | id  -> (empty)
type deduper[K, V, ID any] struct {
	name    string
	within  int64 // milliseconds
	id      func(K, V) ID
	idSerde serde.Serde[ID]
	next    stream.Processor[K, V]
	store   stream.Store
	buf     []byte
	// No remembered ID was seen before forgetFrom: it spares most
	// advances of stream time a scan of the store. It was last raised by
	// the advance to hintTo; if stream time is back before it, that
	// advance's record failed and its store writes were undone, so it no
	// longer holds.
	forgetFrom, hintTo int64
}

const (
	dedupeByID   byte = 'i'
	dedupeByTime byte = 'x'
)

func (d *deduper[K, V, ID]) Init(ctx stream.Context) (err error) {
	d.forgetFrom, d.hintTo = math.MinInt64, math.MinInt64
	d.store, err = ctx.Store(d.name)
	return err
}

func dedupeTimeKey(dst []byte, ms int64, id []byte) []byte {
	return append(window.AppendTime(append(dst, dedupeByTime), ms), id...)
}

func (d *deduper[K, V, ID]) Process(ctx stream.Context, r stream.Record[K, V]) error {
	idb, err := d.idSerde.Encode(d.id(r.Key, r.Value))
	if err != nil {
		return fmt.Errorf("%s: encode id: %w", d.name, err)
	}
	ts, st := r.Timestamp.UnixMilli(), ctx.StreamTime().UnixMilli()
	d.buf = append(append(d.buf[:0], dedupeByID), idb...)
	v, err := d.store.Get(d.buf)
	found := err == nil
	switch {
	case errors.Is(err, stream.ErrNotFound):
	case err != nil:
		return fmt.Errorf("%s: %w", d.name, err)
	case len(v) != window.TimeLen:
		return fmt.Errorf("%s: entry of id %x: %w", d.name, idb, window.ErrCorrupt)
	default:
		seen := window.Time(v)
		if ts-seen <= d.within && seen-ts <= d.within {
			return nil // a duplicate
		}
		if ts < seen {
			return d.next.Process(ctx, r) // an old record: the newer one stays remembered
		}
		if err := d.store.Delete(dedupeTimeKey(nil, seen, idb)); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	// Remember the record, unless stream time is already past its span
	// (it would be forgotten at once).
	switch {
	case ts >= st-d.within:
		if err := d.store.Put(d.buf, window.AppendTime(nil, ts)); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if err := d.store.Put(dedupeTimeKey(nil, ts, idb), nil); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		d.forgetFrom = min(d.forgetFrom, ts)
	case found: // the older record it replaces is forgotten too
		if err := d.store.Delete(d.buf); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return d.next.Process(ctx, r)
}

// OnStreamTime forgets the IDs whose span stream time passed: those
// whose timestamp + within is now behind it.
func (d *deduper[K, V, ID]) OnStreamTime(_ stream.Context, from, to time.Time) error {
	// Forgotten once seen + within < stream time: seen in [f - within, t - within).
	if f := sinceMillis(from); f < d.hintTo {
		d.forgetFrom = math.MinInt64 // see hintTo
	}
	d.hintTo = to.UnixMilli()
	lo, hi := max(satSub(sinceMillis(from), d.within), d.forgetFrom), satSub(to.UnixMilli(), d.within)
	d.forgetFrom = max(d.forgetFrom, hi)
	return scanBatches(d.store, dedupeTimeKey(nil, lo, nil), dedupeTimeKey(nil, hi, nil), func(k, _ []byte) error {
		if err := d.store.Delete(k); err != nil {
			return err
		}
		return d.store.Delete(append([]byte{dedupeByID}, k[1+window.TimeLen:]...))
	})
}
