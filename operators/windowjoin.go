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

// JoinWindows says which records of two streams a windowed join pairs: a
// left record at time t and a right record with the same key at time u
// join if t-Before <= u <= t+After.
//
// Time is event time: record timestamps, in milliseconds. The join keeps
// its own stream time, the largest timestamp it has seen on either side
// (kept in its store, so a restart goes on from where it was). Grace is
// how long after a record's window has passed in stream time the join
// still accepts records for it: a left record at t is late, and dropped
// (counted as "late", see [stream.Context.Dropped]), once stream time is
// past t+After+Grace; a right record at u once it is past u+Before+Grace.
// Each side's records are kept until stream time passes their time plus
// Before+After+Grace, then purged from the store and its changelog.
type JoinWindows struct {
	Before, After, Grace time.Duration
}

// JoinWithin returns the windows that pair records at most d apart, with
// no grace.
func JoinWithin(d time.Duration) JoinWindows { return JoinWindows{Before: d, After: d} }

// WithGrace returns w with grace period g.
func (w JoinWindows) WithGrace(g time.Duration) JoinWindows {
	w.Grace = g
	return w
}

func (w JoinWindows) check() error {
	if w.Before < 0 || w.After < 0 || w.Grace < 0 {
		return fmt.Errorf("windows before %s, after %s, grace %s: none may be negative", w.Before, w.After, w.Grace)
	}
	return nil
}

// JoinBuffers names the store of a windowed join, which keeps the records
// of both sides until they can no longer join, and gives the serdes it
// stores them with. The store's changelog is "<job>-<name>-changelog".
type JoinBuffers[K, VL, VR any] struct {
	name  string
	key   serde.Serde[K]
	left  serde.Serde[VL]
	right serde.Serde[VR]
}

// Buffers returns the JoinBuffers of a windowed join: its store name and
// the serdes of keys and of the two sides' values.
func Buffers[K, VL, VR any](name string, key serde.Serde[K], left serde.Serde[VL], right serde.Serde[VR]) JoinBuffers[K, VL, VR] {
	return JoinBuffers[K, VL, VR]{name: name, key: key, left: left, right: right}
}

// Join joins two streams within time windows: each pair of a left and a
// right record with the same key whose timestamps w pairs gives one
// record, joiner's result under the key, with the larger of the two
// timestamps. A pair is emitted when its second record arrives, whichever
// side it is on. The streams must be co-partitioned, as for [JoinTable];
// within a task their records are processed in timestamp order, so the
// output is the same on every run over the same input.
func Join[K, VL, VR, R any](left stream.Stream[K, VL], right stream.Stream[K, VR], w JoinWindows, b JoinBuffers[K, VL, VR], joiner func(k K, l VL, r VR) R) stream.Stream[K, R] {
	return windowJoin(left, right, w, b, "join", false, false, func(k K, l VL, _ bool, r VR, _ bool) R { return joiner(k, l, r) }, joiner == nil)
}

// LeftJoin is [Join] that also emits each left record that joins no right
// record: once its window has closed in stream time (after t+After+Grace,
// so no right record can join it any more), joiner is called with found
// false and r the zero value. Such records are emitted in order of that
// closing time, with the left record's timestamp.
func LeftJoin[K, VL, VR, R any](left stream.Stream[K, VL], right stream.Stream[K, VR], w JoinWindows, b JoinBuffers[K, VL, VR], joiner func(k K, l VL, r VR, found bool) R) stream.Stream[K, R] {
	return windowJoin(left, right, w, b, "left-join", true, false, func(k K, l VL, _ bool, r VR, rok bool) R { return joiner(k, l, r, rok) }, joiner == nil)
}

// OuterJoin is [LeftJoin] on both sides: a record of either side that
// joins nothing is emitted once its window has closed, with joiner told
// which side it is by lok and rok.
func OuterJoin[K, VL, VR, R any](left stream.Stream[K, VL], right stream.Stream[K, VR], w JoinWindows, b JoinBuffers[K, VL, VR], joiner func(k K, l VL, lok bool, r VR, rok bool) R) stream.Stream[K, R] {
	return windowJoin(left, right, w, b, "outer-join", true, true, joiner, joiner == nil)
}

func windowJoin[K, VL, VR, R any](left stream.Stream[K, VL], right stream.Stream[K, VR], w JoinWindows, b JoinBuffers[K, VL, VR], kind string, keepLeft, keepRight bool, joiner func(K, VL, bool, VR, bool) R, nilJoiner bool) stream.Stream[K, R] {
	j := left.Job()
	if err := w.check(); err != nil {
		j.AddError(fmt.Errorf("operators: %s %s: %w", kind, b.name, err))
	}
	if nilJoiner {
		j.AddError(fmt.Errorf("operators: %s %s: nil joiner", kind, b.name))
	}
	if b.key == nil || b.left == nil || b.right == nil {
		j.AddError(fmt.Errorf("operators: %s %s: nil serde in its JoinBuffers", kind, b.name))
	}
	before, after, grace := w.Before.Milliseconds(), w.After.Milliseconds(), w.Grace.Milliseconds()
	return stream.Via2(left, right, kind, func(next stream.Processor[K, R]) stream.Processor2[K, VL, K, VR] {
		p := &windowJoiner[K, VL, VR, R]{b: b, grace: grace, retain: before + after + grace, joiner: joiner, next: next,
			nextPurge: [2]int64{unknownTime, unknownTime}, nextUnjoined: unknownTime}
		p.sides[leftSide] = joinSide{data: prefixLeftData, index: prefixLeftIndex, before: before, after: after, keep: keepLeft}
		p.sides[rightSide] = joinSide{data: prefixRightData, index: prefixRightIndex, before: after, after: before, keep: keepRight}
		return p
	}, stream.WithStores(stream.StoreSpec{Name: b.name}), stream.CoPartitioned(b.key), stream.KeepsKey())
}

// The store of a windowed join holds both sides' buffers, the records
// waiting to be emitted unjoined, and the join's clock, under these
// prefixes (times are window.AppendTime encodings, seq a big-endian
// uint64 that numbers the records the join buffered):
//
//	buffer entry: side data   | window.AppendKey(key) | time | seq  -> value
//	time index:   side index  | time | seq                           -> window.AppendKey(key)
//	unjoined:     0x30        | closing time | seq                   -> side data | time | window.AppendKey(key)
//	clock:        0x00 'T'    -> stream time; 0x00 'S' -> the last seq
//
// A record's buffer entries let the other side find it by key and time
// with one range scan; the time index purges buffers in time order; the
// unjoined entries are emitted in order of closing time.
const (
	prefixMeta       byte = 0x00
	prefixLeftData   byte = 0x10
	prefixLeftIndex  byte = 0x11
	prefixRightData  byte = 0x20
	prefixRightIndex byte = 0x21
	prefixUnjoined   byte = 0x30
)

var (
	metaTime = []byte{prefixMeta, 'T'}
	metaSeq  = []byte{prefixMeta, 'S'}
)

const (
	leftSide  = 0
	rightSide = 1
)

// joinSide is one side of a windowed join: where its records are kept,
// how far back and ahead of a record of this side its matches on the
// other side lie, and whether its unjoined records are emitted.
type joinSide struct {
	data, index   byte
	before, after int64
	keep          bool
}

// Bounds of the next-expiry hints: noTime means there is nothing to
// expire, unknownTime that a scan must find out.
const (
	noTime      = math.MaxInt64
	unknownTime = math.MinInt64
)

// windowJoiner is the processor of the windowed joins. Its clock and
// sequence are loaded from the store by the first record, after the
// runner restored the store (see begin); nextPurge and nextUnjoined let
// it skip scans that would find nothing.
type windowJoiner[K, VL, VR, R any] struct {
	b      JoinBuffers[K, VL, VR]
	sides  [2]joinSide
	grace  int64
	retain int64 // a record is purged once stream time passes its time + retain
	joiner func(K, VL, bool, VR, bool) R
	next   stream.Processor[K, R]

	store        stream.Store
	loaded       bool
	now          int64 // the join's stream time (ms)
	seq          uint64
	nextPurge    [2]int64 // the earliest time in each side's index, or unknownTime
	nextUnjoined int64    // the earliest closing time of an unjoined record, or unknownTime
	buf          []byte
}

func (j *windowJoiner[K, VL, VR, R]) Init(ctx stream.Context) (err error) {
	j.store, err = ctx.Store(j.b.name)
	return err
}

func (j *windowJoiner[K, VL, VR, R]) ProcessLeft(ctx stream.Context, r stream.Record[K, VL]) error {
	vb, err := j.b.left.Encode(r.Value)
	if err != nil {
		return fmt.Errorf("%s: encode left value: %w", j.b.name, err)
	}
	var none VR
	return j.process(ctx, leftSide, with(r, r.Key, vb), r.Value, none)
}

func (j *windowJoiner[K, VL, VR, R]) ProcessRight(ctx stream.Context, r stream.Record[K, VR]) error {
	vb, err := j.b.right.Encode(r.Value)
	if err != nil {
		return fmt.Errorf("%s: encode right value: %w", j.b.name, err)
	}
	var none VL
	return j.process(ctx, rightSide, with(r, r.Key, vb), none, r.Value)
}

// match is a buffered record of the other side that a record joins.
type match struct {
	ts    int64
	seq   uint64
	value []byte
}

// process runs a record of side s through the join: advance the clock,
// emit the unjoined records whose windows closed, join the record with
// the other side's buffered records, buffer it, and purge what no record
// can join any more. r holds the record's value encoded, lv or rv (by
// its side) its value.
func (j *windowJoiner[K, VL, VR, R]) process(ctx stream.Context, s int, r stream.Record[K, []byte], lv VL, rv VR) error {
	kb, err := j.b.key.Encode(r.Key)
	if err != nil {
		return fmt.Errorf("%s: encode key: %w", j.b.name, err)
	}
	if kb == nil {
		ctx.Dropped("null key")
		return nil
	}
	if err := j.begin(); err != nil {
		return err
	}
	side, other := j.sides[s], j.sides[1-s]
	ts := r.Timestamp.UnixMilli()
	if ts > j.now {
		j.now = ts
		if err := j.store.Put(metaTime, window.AppendTime(nil, j.now)); err != nil {
			return j.fail(err)
		}
	}
	if ts+side.after+j.grace < j.now {
		ctx.Dropped("late")
		return nil
	}
	if err := j.emitClosed(ctx); err != nil {
		return err
	}

	// Join with the other side's records in [ts-before, ts+after].
	lo := window.AppendTime(window.AppendKey([]byte{other.data}, kb), ts-side.before)
	hi := window.AppendTime(window.AppendKey([]byte{other.data}, kb), ts+side.after+1)
	var matches []match
	it := j.store.Range(lo, hi)
	for it.Next() {
		k := it.Key()
		rest := k[len(lo)-window.TimeLen:]
		if len(rest) != window.TimeLen+8 {
			it.Close()
			return j.fail(fmt.Errorf("malformed buffer key %x", k))
		}
		matches = append(matches, match{ts: window.Time(rest), seq: binary.BigEndian.Uint64(rest[window.TimeLen:]), value: it.Value()})
	}
	if err := errors.Join(it.Err(), it.Close()); err != nil {
		return j.fail(err)
	}
	for _, m := range matches {
		var err error
		if s == leftSide {
			if rv, err = j.b.right.Decode(m.value); err != nil {
				return j.fail(fmt.Errorf("decode right value: %w", err))
			}
		} else if lv, err = j.b.left.Decode(m.value); err != nil {
			return j.fail(fmt.Errorf("decode left value: %w", err))
		}
		out := j.joiner(r.Key, lv, true, rv, true)
		if other.keep {
			// The buffered record is joined now: it will not be emitted
			// unjoined.
			if err := j.deleteIfPresent(j.unjoinedKey(m.ts+other.after+j.grace, m.seq)); err != nil {
				return err
			}
		}
		res := with(r, r.Key, out)
		res.Timestamp = time.UnixMilli(max(ts, m.ts))
		if err := j.next.Process(ctx, res); err != nil {
			return err
		}
	}

	// Buffer the record, numbered by begin's seq.
	dk := binary.BigEndian.AppendUint64(window.AppendTime(window.AppendKey([]byte{side.data}, kb), ts), j.seq)
	if err := j.store.Put(dk, r.Value); err != nil {
		return j.fail(err)
	}
	ik := binary.BigEndian.AppendUint64(window.AppendTime([]byte{side.index}, ts), j.seq)
	if err := j.store.Put(ik, window.AppendKey(nil, kb)); err != nil {
		return j.fail(err)
	}
	j.nextPurge[s] = min(j.nextPurge[s], ts)
	if side.keep && len(matches) == 0 {
		closes := ts + side.after + j.grace
		ref := window.AppendKey(window.AppendTime([]byte{side.data}, ts), kb)
		if err := j.store.Put(j.unjoinedKey(closes, j.seq), ref); err != nil {
			return j.fail(err)
		}
		j.nextUnjoined = min(j.nextUnjoined, closes)
	}
	return j.purge()
}

func (j *windowJoiner[K, VL, VR, R]) fail(err error) error {
	return fmt.Errorf("%s: %w", j.b.name, err)
}

// begin starts a record: it numbers it with the next seq, kept in the
// store. The processor holds its clock, its seq and its expiry hints in
// memory; if the store's seq is not the one it holds, the store is not
// where the processor left it (this is the task's first record, or the
// previous record failed and its store writes were undone), and it loads
// the clock and seq from the store again and forgets its hints. So a
// failed record leaves no trace in the join, as in its store.
func (j *windowJoiner[K, VL, VR, R]) begin() error {
	v, err := j.store.Get(metaSeq)
	var stored uint64
	switch {
	case errors.Is(err, stream.ErrNotFound):
	case err != nil:
		return j.fail(err)
	case len(v) != 8:
		return j.fail(fmt.Errorf("malformed sequence entry %x", v))
	default:
		stored = binary.BigEndian.Uint64(v)
	}
	if !j.loaded || stored != j.seq {
		j.now = math.MinInt64
		switch v, err := j.store.Get(metaTime); {
		case errors.Is(err, stream.ErrNotFound):
		case err != nil:
			return j.fail(err)
		case len(v) != window.TimeLen:
			return j.fail(fmt.Errorf("malformed clock entry %x", v))
		default:
			j.now = window.Time(v)
		}
		j.seq, j.loaded = stored, true
		j.nextPurge = [2]int64{unknownTime, unknownTime}
		j.nextUnjoined = unknownTime
	}
	j.seq++
	if err := j.store.Put(metaSeq, binary.BigEndian.AppendUint64(nil, j.seq)); err != nil {
		return j.fail(err)
	}
	return nil
}

func (j *windowJoiner[K, VL, VR, R]) unjoinedKey(closes int64, seq uint64) []byte {
	j.buf = binary.BigEndian.AppendUint64(window.AppendTime(append(j.buf[:0], prefixUnjoined), closes), seq)
	return j.buf
}

func (j *windowJoiner[K, VL, VR, R]) deleteIfPresent(key []byte) error {
	if _, err := j.store.Get(key); errors.Is(err, stream.ErrNotFound) {
		return nil
	} else if err != nil {
		return j.fail(err)
	}
	if err := j.store.Delete(key); err != nil {
		return j.fail(err)
	}
	return nil
}

// unjoined is a record waiting to be emitted unjoined.
type unjoined struct {
	key  []byte // its entry among the unjoined
	side int
	data []byte // its buffer entry
	ts   int64
	k    []byte
}

// emitClosed emits, in order of closing time, the unjoined records whose
// windows closed before the join's stream time, and forgets them.
func (j *windowJoiner[K, VL, VR, R]) emitClosed(ctx stream.Context) error {
	if j.nextUnjoined >= j.now || !j.sides[leftSide].keep && !j.sides[rightSide].keep {
		return nil
	}
	var due []unjoined
	it := j.store.Prefix([]byte{prefixUnjoined})
	j.nextUnjoined = noTime
	for it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 1+window.TimeLen+8 || len(v) < 1+window.TimeLen {
			it.Close()
			return j.fail(fmt.Errorf("malformed unjoined entry %x", k))
		}
		if closes := window.Time(k[1:]); closes >= j.now {
			j.nextUnjoined = closes
			break
		}
		s := leftSide
		if v[0] == prefixRightData {
			s = rightSide
		}
		kk, _, err := window.SplitKey(v[1+window.TimeLen:])
		if err != nil {
			it.Close()
			return j.fail(fmt.Errorf("malformed unjoined entry %x: %w", k, err))
		}
		seq := binary.BigEndian.Uint64(k[1+window.TimeLen:])
		ts := window.Time(v[1:])
		data := binary.BigEndian.AppendUint64(window.AppendTime(window.AppendKey([]byte{v[0]}, kk), ts), seq)
		due = append(due, unjoined{key: bytes.Clone(k), side: s, data: data, ts: ts, k: kk})
	}
	if err := errors.Join(it.Err(), it.Close()); err != nil {
		return j.fail(err)
	}
	for _, u := range due {
		if err := j.store.Delete(u.key); err != nil {
			return j.fail(err)
		}
		vb, err := j.store.Get(u.data)
		if errors.Is(err, stream.ErrNotFound) {
			continue // purged already: cannot happen with a consistent store
		}
		if err != nil {
			return j.fail(err)
		}
		k, err := j.b.key.Decode(u.k)
		if err != nil {
			return j.fail(fmt.Errorf("decode key: %w", err))
		}
		var out R
		if u.side == leftSide {
			lv, err := j.b.left.Decode(vb)
			if err != nil {
				return j.fail(fmt.Errorf("decode left value: %w", err))
			}
			var rv VR
			out = j.joiner(k, lv, true, rv, false)
		} else {
			rv, err := j.b.right.Decode(vb)
			if err != nil {
				return j.fail(fmt.Errorf("decode right value: %w", err))
			}
			var lv VL
			out = j.joiner(k, lv, false, rv, true)
		}
		if err := j.next.Process(ctx, stream.Record[K, R]{Key: k, Value: out, Timestamp: time.UnixMilli(u.ts)}); err != nil {
			return err
		}
	}
	return nil
}

// purge deletes the buffered records that can no longer join: those
// older than the join's stream time minus Before+After+Grace.
func (j *windowJoiner[K, VL, VR, R]) purge() error {
	cutoff := j.now - j.retain // purge records with time < cutoff
	for s := range j.sides {
		if j.nextPurge[s] >= cutoff {
			continue
		}
		side := j.sides[s]
		var doomed [][]byte
		it := j.store.Prefix([]byte{side.index})
		j.nextPurge[s] = noTime
		for it.Next() {
			k, v := it.Key(), it.Value()
			if len(k) != 1+window.TimeLen+8 {
				it.Close()
				return j.fail(fmt.Errorf("malformed index entry %x", k))
			}
			ts := window.Time(k[1:])
			if ts >= cutoff {
				j.nextPurge[s] = ts
				break
			}
			kk, _, err := window.SplitKey(v)
			if err != nil {
				it.Close()
				return j.fail(fmt.Errorf("malformed index entry %x: %w", k, err))
			}
			data := append(window.AppendTime(window.AppendKey([]byte{side.data}, kk), ts), k[1+window.TimeLen:]...)
			doomed = append(doomed, bytes.Clone(k), data)
		}
		if err := errors.Join(it.Err(), it.Close()); err != nil {
			return j.fail(err)
		}
		for _, k := range doomed {
			if err := j.store.Delete(k); err != nil {
				return j.fail(err)
			}
		}
	}
	return nil
}
