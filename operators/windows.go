package operators

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/samsa-go/samsa/state/window"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// TimeWindows are fixed-size windows of event time: tumbling (each record
// in exactly one window) or hopping (windows of one size starting every
// advance, so a record falls in size/advance of them). Windows are aligned
// to the Unix epoch: their starts are multiples of advance.
//
// A window [start, end) accepts records until stream time reaches end +
// grace; it is then closed. A record that arrives when every window it
// falls in is closed is late: it is dropped and counted
// (stream.Context.Dropped, reason "late"). (With hopping windows, a record
// that misses only some of its windows, the older ones, updates the
// others and is not counted.) A window is purged from the store, and
// from its changelog, once stream time reaches start + retention.
//
// Results are emitted on every update by default: each record that
// updates a window forwards the window's new aggregate. With EmitFinal, a
// window's aggregate is forwarded once, when the window closes, as Kafka
// Streams' suppress(untilWindowCloses) does.
//
// Durations are in whole milliseconds, the precision of Kafka timestamps.
type TimeWindows struct {
	size, advance, grace, retention time.Duration
	final                           bool
}

// Tumbling returns tumbling windows of size: adjacent, not overlapping.
// Grace and retention default to zero (a window closes when stream time
// reaches its end) and size + grace.
func Tumbling(size time.Duration) TimeWindows {
	return TimeWindows{size: size, advance: size}
}

// Hopping returns windows of size that start every advance (0 < advance
// <= size).
func Hopping(size, advance time.Duration) TimeWindows {
	return TimeWindows{size: size, advance: advance}
}

// WithGrace lets a window accept out-of-order records for d after its end.
func (w TimeWindows) WithGrace(d time.Duration) TimeWindows { w.grace = d; return w }

// WithRetention keeps each window in the store for d after its start (at
// least size + grace, the default): how long closed windows stay
// readable in the store.
func (w TimeWindows) WithRetention(d time.Duration) TimeWindows { w.retention = d; return w }

// EmitFinal forwards each window's result once, when the window closes,
// instead of on every update.
func (w TimeWindows) EmitFinal() TimeWindows { w.final = true; return w }

func (w TimeWindows) check() error {
	switch {
	case w.size <= 0 || w.size%time.Millisecond != 0:
		return fmt.Errorf("window size %s: want a positive whole number of milliseconds", w.size)
	case w.advance <= 0 || w.advance > w.size || w.advance%time.Millisecond != 0:
		return fmt.Errorf("window advance %s: want whole milliseconds, more than 0 and at most the size %s", w.advance, w.size)
	case w.grace < 0 || w.grace%time.Millisecond != 0:
		return fmt.Errorf("grace %s: want zero or more whole milliseconds", w.grace)
	case w.retention != 0 && (w.retention < w.size+w.grace || w.retention%time.Millisecond != 0):
		return fmt.Errorf("retention %s: want whole milliseconds, at least size + grace (%s)", w.retention, w.size+w.grace)
	}
	return nil
}

// SessionWindows group the records of a key into sessions: runs of
// records no more than gap apart. A record further than gap from the
// key's sessions starts a new one; a record that falls within gap of one
// or more sessions extends them, merging them into one.
//
// A record is late, dropped and counted (stream.Context.Dropped, reason
// "late"), if its timestamp is more than grace behind stream time, unless
// it falls inside a session of its key that is still open (between its
// first and last records), which it then counts in. A session [start,
// end] (both included) is closed once stream time passes end + gap +
// grace: no record that is not late can reach it any more. (Kafka Streams
// accepts a record whose merged session would end within grace of stream
// time; with that rule a late record can join a closed session to a new
// one, so a closed session would not be final.) A session is purged from
// the store, and from its changelog, once stream time passes end +
// retention.
//
// Results are emitted on every update by default: the merged session's
// new aggregate, after a deletion (a Change with Deleted set) of each
// session it replaced. With EmitFinal, each session is forwarded once,
// when it closes.
type SessionWindows struct {
	gap, grace, retention time.Duration
	final                 bool
}

// Sessions returns session windows that close after gap of inactivity.
// Grace and retention default to zero and gap + grace.
func Sessions(gap time.Duration) SessionWindows { return SessionWindows{gap: gap} }

// WithGrace lets sessions accept records up to d behind stream time.
func (w SessionWindows) WithGrace(d time.Duration) SessionWindows { w.grace = d; return w }

// WithRetention keeps each session in the store until stream time passes its
// end by d (at least gap + grace, the default).
func (w SessionWindows) WithRetention(d time.Duration) SessionWindows { w.retention = d; return w }

// EmitFinal forwards each session once, when it closes, instead of on
// every update.
func (w SessionWindows) EmitFinal() SessionWindows { w.final = true; return w }

func (w SessionWindows) check() error {
	switch {
	case w.gap <= 0 || w.gap%time.Millisecond != 0:
		return fmt.Errorf("session gap %s: want a positive whole number of milliseconds", w.gap)
	case w.grace < 0 || w.grace%time.Millisecond != 0:
		return fmt.Errorf("grace %s: want zero or more whole milliseconds", w.grace)
	case w.retention != 0 && (w.retention < w.gap+w.grace || w.retention%time.Millisecond != 0):
		return fmt.Errorf("retention %s: want whole milliseconds, at least gap + grace (%s)", w.retention, w.gap+w.grace)
	}
	return nil
}

// WindowedAggregate folds the records of each key into one aggregate per
// time window (see [TimeWindows]), kept in the window store name: init
// gives a window's first aggregate, add folds in a record. The result is
// a table keyed by key and window; each result is a record of its
// Changes, timestamped with the latest record timestamp in the window.
//
// The store keeps windows start first (see package state/window), with a
// changelog like any store: it cannot be joined or looked up as a
// key-value table. Records with a null key or value are dropped, as in
// [Aggregate].
func WindowedAggregate[K, V, A any](g Grouped[K, V], name string, w TimeWindows, init func() A, add func(K, V, A) A, agg serde.Serde[A]) stream.Table[stream.Windowed[K], A] {
	return timeWindowed(g, name, w, "windowed-aggregate", &windowAgg[K, V, A]{init: init, add: add, agg: agg}, agg)
}

// WindowedReduce combines the records of each key in each time window with
// fn, the window's first record being its first value.
func WindowedReduce[K, V any](g Grouped[K, V], name string, w TimeWindows, fn func(acc, v V) V) stream.Table[stream.Windowed[K], V] {
	return timeWindowed(g, name, w, "windowed-reduce", &windowAgg[K, V, V]{reduce: fn, agg: g.value}, g.value)
}

// WindowedCount counts the records of each key in each time window.
func WindowedCount[K, V any](g Grouped[K, V], name string, w TimeWindows) stream.Table[stream.Windowed[K], int64] {
	return WindowedAggregate(g, name, w, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 }, serde.Int64)
}

func timeWindowed[K, V, A any](g Grouped[K, V], name string, w TimeWindows, kind string, proto *windowAgg[K, V, A], agg serde.Serde[A]) stream.Table[stream.Windowed[K], A] {
	if err := w.check(); err != nil {
		g.s.Job().AddError(fmt.Errorf("operators: %s %q: %w", kind, name, err))
	}
	retention := w.retention
	if retention == 0 {
		retention = w.size + w.grace
	}
	changes := stream.Via(g.s, kind, func(next stream.Processor[stream.Windowed[K], stream.Change[A]]) stream.Processor[K, V] {
		a := *proto
		a.name, a.key, a.next = name, g.key, next
		a.size, a.advance, a.grace = w.size.Milliseconds(), w.advance.Milliseconds(), w.grace.Milliseconds()
		a.retention, a.final = retention.Milliseconds(), w.final
		return &a
	}, stream.WithStores(stream.StoreSpec{Name: name}))
	t := stream.NewTable(changes, name, stream.WindowedSerde(g.key), agg)
	windowStoreFormat(g.s.Job(), name, g.key, agg)
	return t
}

// windowAgg is the processor of the time-windowed aggregations. Its store
// maps window.FixedKey(start, key) to the latest record timestamp in the
// window (8 bytes) followed by the encoded aggregate.
type windowAgg[K, V, A any] struct {
	name                            string
	size, advance, grace, retention int64 // milliseconds
	final                           bool
	key                             serde.Serde[K]
	agg                             serde.Serde[A]
	init                            func() A
	add                             func(K, V, A) A
	reduce                          func(A, V) A // WindowedReduce: A is V
	next                            stream.Processor[stream.Windowed[K], stream.Change[A]]

	store  stream.Store
	bytesV bool
	buf    []byte
	starts []int64
}

func (a *windowAgg[K, V, A]) Init(ctx stream.Context) (err error) {
	a.store, err = ctx.Store(a.name)
	_, a.bytesV = any(*new(V)).([]byte)
	return err
}

func (a *windowAgg[K, V, A]) Process(ctx stream.Context, r stream.Record[K, V]) error {
	kb, ok, err := groupKey(ctx, a.name, a.key, r, a.bytesV)
	if !ok {
		return err
	}
	ts, st := r.Timestamp.UnixMilli(), ctx.StreamTime().UnixMilli()
	// The windows ts falls in, oldest first.
	a.starts = a.starts[:0]
	for s := floorDiv(ts, a.advance) * a.advance; s > ts-a.size; s -= a.advance {
		a.starts = append(a.starts, s)
	}
	updated := false
	for i := len(a.starts) - 1; i >= 0; i-- {
		s := a.starts[i]
		if st >= s+a.size+a.grace {
			continue // closed
		}
		updated = true
		a.buf = window.FixedKey(a.buf[:0], s, kb)
		old, err := a.store.Get(a.buf)
		found := err == nil
		if err != nil && !errors.Is(err, stream.ErrNotFound) {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		maxTS := ts
		var cur A
		if found {
			var prevTS int64
			if prevTS, cur, err = a.decode(old); err != nil {
				return err
			}
			maxTS = max(maxTS, prevTS)
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
		vb, err := a.agg.Encode(cur)
		if err != nil {
			return fmt.Errorf("%s: encode aggregate: %w", a.name, err)
		}
		if err := a.store.Put(a.buf, append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(vb)), uint64(maxTS)), vb...)); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		if !a.final {
			err := a.next.Process(ctx, stream.Record[stream.Windowed[K], stream.Change[A]]{
				Key:   stream.Windowed[K]{Key: r.Key, Window: stream.Window{Start: time.UnixMilli(s), End: time.UnixMilli(s + a.size)}},
				Value: stream.Change[A]{Value: cur}, Timestamp: time.UnixMilli(maxTS), Headers: r.Headers,
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
			})
			if err != nil {
				return err
			}
		}
	}
	if !updated {
		ctx.Dropped("late")
	}
	return nil
}

func (a *windowAgg[K, V, A]) decode(v []byte) (int64, A, error) {
	var zero A
	if len(v) < 8 {
		return 0, zero, fmt.Errorf("%s: window value of %d bytes: %w", a.name, len(v), window.ErrCorrupt)
	}
	agg, err := a.agg.Decode(v[8:])
	if err != nil {
		return 0, zero, fmt.Errorf("%s: decode aggregate: %w", a.name, err)
	}
	return int64(binary.BigEndian.Uint64(v)), agg, nil
}

// OnStreamTime closes the windows whose close time (end + grace) stream
// time passed from from to to, forwarding their results with EmitFinal,
// and purges the windows past their retention.
func (a *windowAgg[K, V, A]) OnStreamTime(ctx stream.Context, from, to time.Time) error {
	f, t := sinceMillis(from), to.UnixMilli()
	closeLag := a.size + a.grace
	if a.final {
		// Closing at s + closeLag in (f, t]: s in (f - closeLag, t - closeLag].
		lo, hi := satSub(f, closeLag-1), satSub(t, closeLag-1)
		purge := a.retention == closeLag
		if !a.startsIn(lo, hi) {
			lo = hi // no window can start there: nothing to scan
		}
		err := scanBatches(a.store, window.AppendTime(nil, lo), window.AppendTime(nil, hi), func(k, v []byte) error {
			if err := a.emitFinal(ctx, k, v); err != nil {
				return err
			}
			if purge {
				return a.store.Delete(k)
			}
			return nil
		})
		if err != nil || purge {
			return err
		}
	}
	lo, hi := satSub(f, a.retention-1), satSub(t, a.retention-1)
	if !a.startsIn(lo, hi) {
		return nil
	}
	return scanBatches(a.store, window.AppendTime(nil, lo), window.AppendTime(nil, hi), func(k, _ []byte) error {
		return a.store.Delete(k)
	})
}

// startsIn reports whether a window can start in [lo, hi): windows start
// at multiples of advance, so most advances of stream time reach none,
// and need no scan of the store.
func (a *windowAgg[K, V, A]) startsIn(lo, hi int64) bool {
	if lo == math.MinInt64 {
		return lo < hi
	}
	first := floorDiv(lo, a.advance) * a.advance
	if first < lo {
		first += a.advance
	}
	return first < hi
}

func (a *windowAgg[K, V, A]) emitFinal(ctx stream.Context, k, v []byte) error {
	start, kb, err := window.SplitFixedKey(k)
	if err != nil {
		return fmt.Errorf("%s: %w", a.name, err)
	}
	key, err := a.key.Decode(kb)
	if err != nil {
		return fmt.Errorf("%s: decode key: %w", a.name, err)
	}
	ts, agg, err := a.decode(v)
	if err != nil {
		return err
	}
	return a.next.Process(ctx, stream.Record[stream.Windowed[K], stream.Change[A]]{
		Key:       stream.Windowed[K]{Key: key, Window: stream.Window{Start: time.UnixMilli(start), End: time.UnixMilli(start + a.size)}},
		Value:     stream.Change[A]{Value: agg},
		Timestamp: time.UnixMilli(ts),
	})
}

// SessionAggregate folds the records of each key into one aggregate per
// session (see [SessionWindows]), kept in the window store name: init
// gives a new session's first aggregate, add folds in a record, and merge
// combines the aggregates of two sessions that a record joins into one
// (the earlier session's first).
// The result is a table keyed by key and session; each result is
// timestamped with the session's end. Records with a null key or value
// are dropped, as in [Aggregate].
func SessionAggregate[K, V, A any](g Grouped[K, V], name string, w SessionWindows, init func() A, add func(K, V, A) A, merge func(K, A, A) A, agg serde.Serde[A]) stream.Table[stream.Windowed[K], A] {
	return sessionWindowed(g, name, w, "session-aggregate", &sessionAgg[K, V, A]{init: init, add: add, merge: merge, agg: agg}, agg)
}

// SessionReduce combines the records of each key in each session with fn;
// when sessions merge, their values are combined with fn too.
func SessionReduce[K, V any](g Grouped[K, V], name string, w SessionWindows, fn func(acc, v V) V) stream.Table[stream.Windowed[K], V] {
	return sessionWindowed(g, name, w, "session-reduce", &sessionAgg[K, V, V]{reduce: fn, agg: g.value}, g.value)
}

// SessionCount counts the records of each key in each session.
func SessionCount[K, V any](g Grouped[K, V], name string, w SessionWindows) stream.Table[stream.Windowed[K], int64] {
	return SessionAggregate(g, name, w, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 },
		func(_ K, a, b int64) int64 { return a + b }, serde.Int64)
}

func sessionWindowed[K, V, A any](g Grouped[K, V], name string, w SessionWindows, kind string, proto *sessionAgg[K, V, A], agg serde.Serde[A]) stream.Table[stream.Windowed[K], A] {
	if err := w.check(); err != nil {
		g.s.Job().AddError(fmt.Errorf("operators: %s %q: %w", kind, name, err))
	}
	if proto.reduce == nil && (proto.init == nil || proto.add == nil || proto.merge == nil) {
		g.s.Job().AddError(fmt.Errorf("operators: %s %q: init, add and merge are all needed", kind, name))
	}
	retention := w.retention
	if retention == 0 {
		retention = w.gap + w.grace
	}
	changes := stream.Via(g.s, kind, func(next stream.Processor[stream.Windowed[K], stream.Change[A]]) stream.Processor[K, V] {
		a := *proto
		a.name, a.key, a.next = name, g.key, next
		a.gap, a.grace, a.retention, a.final = w.gap.Milliseconds(), w.grace.Milliseconds(), retention.Milliseconds(), w.final
		return &a
	}, stream.WithStores(stream.StoreSpec{Name: name}))
	t := stream.NewTable(changes, name, stream.WindowedSerde(g.key), agg)
	sessionStoreFormat(g.s.Job(), name, g.key, agg)
	return t
}

// sessionAgg is the processor of the session aggregations. Its store is
// an indexed window store (see package state/window) of the encoded
// aggregates.
type sessionAgg[K, V, A any] struct {
	name                  string
	gap, grace, retention int64 // milliseconds
	final                 bool
	key                   serde.Serde[K]
	agg                   serde.Serde[A]
	init                  func() A
	add                   func(K, V, A) A
	merge                 func(K, A, A) A
	reduce                func(A, V) A // SessionReduce: A is V
	next                  stream.Processor[stream.Windowed[K], stream.Change[A]]
	store                 stream.Store
	sessions              *window.Indexed[[]byte, A]
	bytesV                bool
	found                 []session[A]
	// No session ends before these: the ends left to close and to purge.
	// They spare most advances of stream time a scan of the store. They
	// were last raised by the advance to hintTo; if stream time is back
	// before it, that advance's record failed and its store writes were
	// undone, so they no longer hold.
	closeFrom, purgeFrom, hintTo int64
}

type session[A any] struct {
	start, end int64
	agg        A
}

func (a *sessionAgg[K, V, A]) Init(ctx stream.Context) (err error) {
	a.closeFrom, a.purgeFrom, a.hintTo = math.MinInt64, math.MinInt64, math.MinInt64
	a.store, err = ctx.Store(a.name)
	a.sessions = window.NewIndexed(a.store, serde.Bytes, a.agg)
	_, a.bytesV = any(*new(V)).([]byte)
	return err
}

func (a *sessionAgg[K, V, A]) Process(ctx stream.Context, r stream.Record[K, V]) error {
	kb, ok, err := groupKey(ctx, a.name, a.key, r, a.bytesV)
	if !ok {
		return err
	}
	ts, st := r.Timestamp.UnixMilli(), ctx.StreamTime().UnixMilli()
	// The sessions within gap of ts, in order; they do not overlap.
	a.found = a.found[:0]
	it := a.sessions.Fetch(kb, ts-a.gap)
	for it.Next() && it.Start() <= ts+a.gap {
		a.found = append(a.found, session[A]{it.Start(), it.End(), it.Value()})
	}
	err = it.Err()
	it.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", a.name, err)
	}
	if ts < st-a.grace {
		// Late, unless it falls inside a session that is still open: it
		// changes neither bound then, so it cannot reach a closed one.
		if len(a.found) != 1 || ts < a.found[0].start || ts > a.found[0].end || a.found[0].end+a.gap+a.grace < st {
			ctx.Dropped("late")
			return nil
		}
	}

	// The sessions' aggregates merged in order, then the record added. (A
	// new session starts from init; merging does not, so init need not be
	// an identity of merge.)
	start, end := ts, ts
	var cur A
	for i, s := range a.found {
		start, end = min(start, s.start), max(end, s.end)
		switch {
		case i == 0:
			cur = s.agg
		case a.reduce != nil:
			cur = a.reduce(cur, any(s.agg).(V))
		default:
			cur = a.merge(r.Key, cur, s.agg)
		}
	}
	switch {
	case a.reduce == nil && len(a.found) == 0:
		cur = a.add(r.Key, r.Value, a.init())
	case a.reduce == nil:
		cur = a.add(r.Key, r.Value, cur)
	case len(a.found) == 0:
		cur = any(r.Value).(A)
	default:
		cur = a.reduce(cur, r.Value)
	}

	for _, s := range a.found {
		if s.start == start && s.end == end {
			continue // updated in place
		}
		if err := a.sessions.Delete(kb, s.start, s.end); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		if !a.final {
			if err := a.forward(ctx, r, s.start, s.end, stream.Change[A]{Deleted: true}, end); err != nil {
				return err
			}
		}
	}
	if err := a.sessions.Put(kb, start, end, cur); err != nil {
		return fmt.Errorf("%s: %w", a.name, err)
	}
	a.closeFrom, a.purgeFrom = min(a.closeFrom, end), min(a.purgeFrom, end)
	if a.final {
		return nil
	}
	return a.forward(ctx, r, start, end, stream.Change[A]{Value: cur}, end)
}

func (a *sessionAgg[K, V, A]) forward(ctx stream.Context, r stream.Record[K, V], start, end int64, c stream.Change[A], ts int64) error {
	return a.next.Process(ctx, stream.Record[stream.Windowed[K], stream.Change[A]]{
		Key:   stream.Windowed[K]{Key: r.Key, Window: stream.Window{Start: time.UnixMilli(start), End: time.UnixMilli(end)}},
		Value: c, Timestamp: time.UnixMilli(ts), Headers: r.Headers,
		Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
	})
}

// OnStreamTime closes the sessions whose end + gap + grace stream time
// passed, forwarding them with EmitFinal, and purges the sessions past
// their retention.
func (a *sessionAgg[K, V, A]) OnStreamTime(ctx stream.Context, from, to time.Time) error {
	f, t := sinceMillis(from), to.UnixMilli()
	if f < a.hintTo {
		a.closeFrom, a.purgeFrom = math.MinInt64, math.MinInt64 // see hintTo
	}
	a.hintTo = t
	// Closed once end + lag < stream time: end in [f - lag, t - lag).
	closeLag := a.gap + a.grace
	if a.final {
		purge := a.retention == closeLag
		lo, hi := max(satSub(f, closeLag), a.closeFrom), satSub(t, closeLag)
		a.closeFrom = max(a.closeFrom, hi)
		if purge {
			a.purgeFrom = a.closeFrom
		}
		err := scanBatches(a.store, window.EndIndexBound(nil, lo), window.EndIndexBound(nil, hi), func(k, _ []byte) error {
			kb, start, end, err := window.SplitEndIndexKey(k)
			if err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			agg, found, err := a.sessions.Get(kb, start, end)
			if err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			if !found {
				return fmt.Errorf("%s: %w: session %x [%d, %d] has no value", a.name, window.ErrCorrupt, kb, start, end)
			}
			key, err := a.key.Decode(kb)
			if err != nil {
				return fmt.Errorf("%s: decode key: %w", a.name, err)
			}
			err = a.next.Process(ctx, stream.Record[stream.Windowed[K], stream.Change[A]]{
				Key:       stream.Windowed[K]{Key: key, Window: stream.Window{Start: time.UnixMilli(start), End: time.UnixMilli(end)}},
				Value:     stream.Change[A]{Value: agg},
				Timestamp: time.UnixMilli(end),
			})
			if err != nil || !purge {
				return err
			}
			return a.sessions.Delete(kb, start, end)
		})
		if err != nil || purge {
			return err
		}
	}
	lo, hi := max(satSub(f, a.retention), a.purgeFrom), satSub(t, a.retention)
	a.purgeFrom = max(a.purgeFrom, hi)
	return scanBatches(a.store, window.EndIndexBound(nil, lo), window.EndIndexBound(nil, hi), func(k, _ []byte) error {
		kb, start, end, err := window.SplitEndIndexKey(k)
		if err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		return a.sessions.Delete(kb, start, end)
	})
}

// groupKey encodes the key of a record reaching an aggregation, and
// drops (ok false, err nil) a record with a null key or, for []byte
// values, a null value, as Aggregate does.
func groupKey[K, V any](ctx stream.Context, name string, key serde.Serde[K], r stream.Record[K, V], bytesV bool) (kb []byte, ok bool, err error) {
	kb, err = key.Encode(r.Key)
	if err != nil {
		return nil, false, fmt.Errorf("%s: encode key: %w", name, err)
	}
	if kb == nil {
		ctx.Dropped("null key")
		return nil, false, nil
	}
	if bytesV && any(r.Value).([]byte) == nil {
		ctx.Dropped("null value")
		return nil, false, nil
	}
	return kb, true, nil
}

// scanBatch is how many store entries scanBatches reads at a time.
const scanBatch = 512

// scanBatches calls fn for each entry of store in [lo, hi), in key order,
// reading a batch of entries at a time and calling fn outside the
// iterator, so that fn may write to the store.
func scanBatches(store stream.Store, lo, hi []byte, fn func(key, value []byte) error) error {
	if bytes.Compare(lo, hi) >= 0 {
		return nil
	}
	type kv struct{ k, v []byte }
	batch := make([]kv, 0, scanBatch)
	for {
		batch = batch[:0]
		it := store.Range(lo, hi)
		for len(batch) < scanBatch && it.Next() {
			batch = append(batch, kv{bytes.Clone(it.Key()), it.Value()})
		}
		err := it.Err()
		it.Close()
		if err != nil {
			return err
		}
		for _, e := range batch {
			if err := fn(e.k, e.v); err != nil {
				return err
			}
		}
		if len(batch) < scanBatch {
			return nil
		}
		lo = append(bytes.Clone(batch[len(batch)-1].k), 0)
	}
}

// sinceMillis returns t in milliseconds, or the smallest time for the
// zero time (no stream time yet).
func sinceMillis(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixMilli()
}

// satSub returns a - b (b >= 0), stopping at the smallest int64.
func satSub(a, b int64) int64 {
	if a < math.MinInt64+b {
		return math.MinInt64
	}
	return a - b
}

// floorDiv returns a / b rounded down (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
