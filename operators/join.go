package operators

import (
	"errors"
	"fmt"

	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// JoinTable joins each record of s with the value its key has in t when
// the record is processed, and forwards joiner's result under the
// record's key; a record whose key t does not hold is dropped (an inner
// join). Updates of t produce nothing: they only change what later
// records of s find (Kafka Streams' KStream-KTable join).
//
// s and t must be co-partitioned: partitioned by the same key bytes (the
// keys of each must come unchanged from topics read with the same key
// serde as t's), over topics with equal partition counts. Job.Build and
// the runner check it. Within a task, the records of s and the updates of
// t are processed in timestamp order (see the runner's documentation), so
// a record finds the table as it was at its timestamp, and the result is
// the same on every run over the same input.
func JoinTable[K, V, VT, R any](s stream.Stream[K, V], t stream.Table[K, VT], joiner func(k K, v V, tv VT) R) stream.Stream[K, R] {
	return joinTable(s, t, "join-table", false, func(k K, v V, tv VT, _ bool) R { return joiner(k, v, tv) }, joiner == nil)
}

// LeftJoinTable is [JoinTable] that keeps every record of s: joiner is
// called with found false, and tv the zero value, when t does not hold
// the record's key (or the key is null: encoded as nil).
func LeftJoinTable[K, V, VT, R any](s stream.Stream[K, V], t stream.Table[K, VT], joiner func(k K, v V, tv VT, found bool) R) stream.Stream[K, R] {
	return joinTable(s, t, "left-join-table", true, joiner, joiner == nil)
}

func joinTable[K, V, VT, R any](s stream.Stream[K, V], t stream.Table[K, VT], kind string, left bool, joiner func(K, V, VT, bool) R, nilJoiner bool) stream.Stream[K, R] {
	if nilJoiner {
		s.Job().AddError(fmt.Errorf("operators: %s of table %s: nil joiner", kind, t.Store()))
	}
	return stream.Via2(s, t.Changes(), kind, func(next stream.Processor[K, R]) stream.Processor2[K, V, K, stream.Change[VT]] {
		return &tableJoin[K, V, VT, R]{store: t.Store(), key: t.KeySerde(), value: t.ValueSerde(), left: left, joiner: joiner, next: next}
	}, stream.CoPartitioned(t.KeySerde()), stream.KeepsKey())
}

// tableJoin is the processor of JoinTable and LeftJoinTable.
type tableJoin[K, V, VT, R any] struct {
	store  string
	key    serde.Serde[K]
	value  serde.Serde[VT]
	left   bool
	joiner func(K, V, VT, bool) R
	next   stream.Processor[K, R]
	table  stream.Store
}

func (j *tableJoin[K, V, VT, R]) Init(ctx stream.Context) (err error) {
	j.table, err = ctx.Store(j.store)
	return err
}

func (j *tableJoin[K, V, VT, R]) ProcessLeft(ctx stream.Context, r stream.Record[K, V]) error {
	tv, found, err := lookup(j.table, j.key, j.value, r.Key)
	if errors.Is(err, errNullKey) {
		if !j.left {
			ctx.Dropped("null key")
			return nil
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("join with table %s: %w", j.store, err)
	}
	if !found && !j.left {
		return nil
	}
	return j.next.Process(ctx, with(r, r.Key, j.joiner(r.Key, r.Value, tv, found)))
}

// ProcessRight receives the table's updates, which only change the table.
func (j *tableJoin[K, V, VT, R]) ProcessRight(stream.Context, stream.Record[K, stream.Change[VT]]) error {
	return nil
}

// errNullKey is returned by lookup for a key that encodes to nil.
var errNullKey = errors.New("null key")

// lookup returns the value of k in store.
func lookup[K, V any](store stream.Store, key serde.Serde[K], value serde.Serde[V], k K) (V, bool, error) {
	var zero V
	kb, err := key.Encode(k)
	if err != nil {
		return zero, false, fmt.Errorf("encode key: %w", err)
	}
	if kb == nil {
		return zero, false, errNullKey
	}
	vb, err := store.Get(kb)
	if errors.Is(err, stream.ErrNotFound) {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, err
	}
	v, err := value.Decode(vb)
	if err != nil {
		return zero, false, fmt.Errorf("decode value of key %q: %w", kb, err)
	}
	return v, true, nil
}

// JoinTables joins two tables by key into a new table kept in the store
// name: a key has a value in the result while it has one in both l and
// r, joiner's result. Every update of either table updates the result
// (with joiner called on the two tables' current values), and removing a
// key from either removes it from the result (a deletion in its Changes,
// sent only if the key was in the result). The tables must be
// co-partitioned, as for [JoinTable].
func JoinTables[K, VL, VR, R any](l stream.Table[K, VL], r stream.Table[K, VR], name string, joiner func(k K, l VL, r VR) R, result serde.Serde[R]) stream.Table[K, R] {
	return joinTables(l, r, name, "join-tables", result, func(k K, lv VL, lok bool, rv VR, rok bool) (R, bool) {
		if !lok || !rok {
			var zero R
			return zero, false
		}
		return joiner(k, lv, rv), true
	}, joiner == nil)
}

// LeftJoinTables is [JoinTables] in which a key has a value while l has
// one: joiner is called with found false (and rv the zero value) while r
// does not hold the key.
func LeftJoinTables[K, VL, VR, R any](l stream.Table[K, VL], r stream.Table[K, VR], name string, joiner func(k K, l VL, r VR, found bool) R, result serde.Serde[R]) stream.Table[K, R] {
	return joinTables(l, r, name, "left-join-tables", result, func(k K, lv VL, lok bool, rv VR, rok bool) (R, bool) {
		if !lok {
			var zero R
			return zero, false
		}
		return joiner(k, lv, rv, rok), true
	}, joiner == nil)
}

// OuterJoinTables is [JoinTables] in which a key has a value while either
// table has one: joiner says which with lok and rok, the missing side
// being its zero value.
func OuterJoinTables[K, VL, VR, R any](l stream.Table[K, VL], r stream.Table[K, VR], name string, joiner func(k K, l VL, lok bool, r VR, rok bool) R, result serde.Serde[R]) stream.Table[K, R] {
	return joinTables(l, r, name, "outer-join-tables", result, func(k K, lv VL, lok bool, rv VR, rok bool) (R, bool) {
		if !lok && !rok {
			var zero R
			return zero, false
		}
		return joiner(k, lv, lok, rv, rok), true
	}, joiner == nil)
}

func joinTables[K, VL, VR, R any](l stream.Table[K, VL], r stream.Table[K, VR], name, kind string, result serde.Serde[R], join func(K, VL, bool, VR, bool) (R, bool), nilJoiner bool) stream.Table[K, R] {
	j := l.Changes().Job()
	if nilJoiner {
		j.AddError(fmt.Errorf("operators: %s %s: nil joiner", kind, name))
	}
	if result == nil {
		j.AddError(fmt.Errorf("operators: %s %s: nil result serde", kind, name))
	}
	changes := stream.Via2(l.Changes(), r.Changes(), kind, func(next stream.Processor[K, stream.Change[R]]) stream.Processor2[K, stream.Change[VL], K, stream.Change[VR]] {
		return &tablesJoin[K, VL, VR, R]{name: name, l: l, r: r, result: result, join: join, next: next}
	}, stream.WithStores(stream.StoreSpec{Name: name}), stream.CoPartitioned(l.KeySerde(), r.KeySerde()), stream.KeepsKey())
	return stream.NewTable(changes, name, l.KeySerde(), result)
}

// tablesJoin is the processor of the table-table joins.
type tablesJoin[K, VL, VR, R any] struct {
	name   string
	l      stream.Table[K, VL]
	r      stream.Table[K, VR]
	result serde.Serde[R]
	join   func(K, VL, bool, VR, bool) (R, bool)
	next   stream.Processor[K, stream.Change[R]]

	left, right, out stream.Store
}

func (j *tablesJoin[K, VL, VR, R]) Init(ctx stream.Context) error {
	var err1, err2, err3 error
	j.left, err1 = ctx.Store(j.l.Store())
	j.right, err2 = ctx.Store(j.r.Store())
	j.out, err3 = ctx.Store(j.name)
	return errors.Join(err1, err2, err3)
}

func (j *tablesJoin[K, VL, VR, R]) ProcessLeft(ctx stream.Context, c stream.Record[K, stream.Change[VL]]) error {
	rv, rok, err := lookup(j.right, j.r.KeySerde(), j.r.ValueSerde(), c.Key)
	if err != nil {
		return j.lookupErr(ctx, err, j.r.Store())
	}
	return j.update(ctx, with(c, c.Key, stream.Change[R]{}), c.Value.Value, !c.Value.Deleted, rv, rok)
}

func (j *tablesJoin[K, VL, VR, R]) ProcessRight(ctx stream.Context, c stream.Record[K, stream.Change[VR]]) error {
	lv, lok, err := lookup(j.left, j.l.KeySerde(), j.l.ValueSerde(), c.Key)
	if err != nil {
		return j.lookupErr(ctx, err, j.l.Store())
	}
	return j.update(ctx, with(c, c.Key, stream.Change[R]{}), lv, lok, c.Value.Value, !c.Value.Deleted)
}

func (j *tablesJoin[K, VL, VR, R]) lookupErr(ctx stream.Context, err error, table string) error {
	if errors.Is(err, errNullKey) {
		ctx.Dropped("null key")
		return nil
	}
	return fmt.Errorf("%s: look up table %s: %w", j.name, table, err)
}

// update sets the result for out.Key from the two sides' values and
// forwards the change as out, which carries the timestamp, headers and
// source of the update that caused it.
func (j *tablesJoin[K, VL, VR, R]) update(ctx stream.Context, out stream.Record[K, stream.Change[R]], lv VL, lok bool, rv VR, rok bool) error {
	kb, err := j.l.KeySerde().Encode(out.Key)
	if err != nil {
		return fmt.Errorf("%s: encode key: %w", j.name, err)
	}
	res, ok := j.join(out.Key, lv, lok, rv, rok)
	if !ok {
		// Forward a deletion only for a key the result holds.
		if _, err := j.out.Get(kb); errors.Is(err, stream.ErrNotFound) {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s: %w", j.name, err)
		}
		if err := j.out.Delete(kb); err != nil {
			return fmt.Errorf("%s: %w", j.name, err)
		}
		out.Value.Deleted = true
		return j.next.Process(ctx, out)
	}
	vb, err := j.result.Encode(res)
	if err != nil {
		return fmt.Errorf("%s: encode result: %w", j.name, err)
	}
	if err := j.out.Put(kb, vb); err != nil {
		return fmt.Errorf("%s: %w", j.name, err)
	}
	out.Value.Value = res
	return j.next.Process(ctx, out)
}

// JoinGlobal joins each record of s with the value of global table g at
// the key keyOf returns for the record, and forwards joiner's result
// under the record's key; a record whose key g does not hold is dropped.
// No co-partitioning is needed: every instance holds all of g. A lookup
// sees g as this instance has read it so far (see [stream.GlobalTable]).
func JoinGlobal[K, V, GK, GV, R any](s stream.Stream[K, V], g stream.GlobalTable[GK, GV], keyOf func(K, V) GK, joiner func(k K, v V, gv GV) R) stream.Stream[K, R] {
	return joinGlobal(s, g, "join-global", false, keyOf, func(k K, v V, gv GV, _ bool) R { return joiner(k, v, gv) }, joiner == nil)
}

// LeftJoinGlobal is [JoinGlobal] that keeps every record of s: joiner is
// called with found false (and gv the zero value) when g does not hold
// the key, or keyOf's key is null (encodes to nil).
func LeftJoinGlobal[K, V, GK, GV, R any](s stream.Stream[K, V], g stream.GlobalTable[GK, GV], keyOf func(K, V) GK, joiner func(k K, v V, gv GV, found bool) R) stream.Stream[K, R] {
	return joinGlobal(s, g, "left-join-global", true, keyOf, joiner, joiner == nil)
}

func joinGlobal[K, V, GK, GV, R any](s stream.Stream[K, V], g stream.GlobalTable[GK, GV], kind string, left bool, keyOf func(K, V) GK, joiner func(K, V, GV, bool) R, nilJoiner bool) stream.Stream[K, R] {
	if nilJoiner || keyOf == nil {
		s.Job().AddError(fmt.Errorf("operators: %s of global table %s: nil joiner or key function", kind, g.Store()))
	}
	return stream.Via(s, kind, func(next stream.Processor[K, R]) stream.Processor[K, V] {
		return &globalJoin[K, V, GK, GV, R]{g: g, left: left, keyOf: keyOf, joiner: joiner, next: next}
	}, stream.KeepsKey())
}

// globalJoin is the processor of JoinGlobal and LeftJoinGlobal.
type globalJoin[K, V, GK, GV, R any] struct {
	g      stream.GlobalTable[GK, GV]
	left   bool
	keyOf  func(K, V) GK
	joiner func(K, V, GV, bool) R
	next   stream.Processor[K, R]
	table  stream.Store
}

func (j *globalJoin[K, V, GK, GV, R]) Init(ctx stream.Context) (err error) {
	j.table, err = ctx.Store(j.g.Store())
	return err
}

func (j *globalJoin[K, V, GK, GV, R]) Process(ctx stream.Context, r stream.Record[K, V]) error {
	gv, found, err := lookup(j.table, j.g.KeySerde(), j.g.ValueSerde(), j.keyOf(r.Key, r.Value))
	if errors.Is(err, errNullKey) {
		if !j.left {
			ctx.Dropped("null key")
			return nil
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("join with global table %s: %w", j.g.Store(), err)
	}
	if !found && !j.left {
		return nil
	}
	return j.next.Process(ctx, with(r, r.Key, j.joiner(r.Key, r.Value, gv, found)))
}
