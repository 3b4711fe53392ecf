// Package memstore is an in-memory state.Backend: ordered maps, one per
// store. It keeps nothing across restarts, so a task with in-memory stores
// restores them from their changelogs in full every time it starts.
package memstore

import (
	"bytes"

	"github.com/google/btree"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
)

type item struct{ key, value []byte }

func less(a, b item) bool { return bytes.Compare(a.key, b.key) < 0 }

// Backend is an in-memory state.Backend. It is not safe for concurrent
// use.
type Backend struct {
	stores  map[string]*btree.BTreeG[item]
	offsets map[string]int64
	bytes   map[string]int64 // of the keys and values, by store
	closed  bool
}

var _ state.Backend = (*Backend)(nil)

// New returns an empty backend.
func New() *Backend {
	return &Backend{stores: map[string]*btree.BTreeG[item]{}, offsets: map[string]int64{}, bytes: map[string]int64{}}
}

func (b *Backend) tree(store string) *btree.BTreeG[item] {
	t := b.stores[store]
	if t == nil {
		t = btree.NewG(32, less)
		b.stores[store] = t
	}
	return t
}

// Get implements state.Backend.
func (b *Backend) Get(store string, key []byte) ([]byte, error) {
	if b.closed {
		return nil, state.ErrClosed
	}
	it, ok := b.tree(store).Get(item{key: key})
	if !ok {
		return nil, state.ErrNotFound
	}
	return bytes.Clone(it.value), nil
}

// Apply implements state.Backend.
func (b *Backend) Apply(batch *state.Batch) error {
	if b.closed {
		return state.ErrClosed
	}
	for _, op := range batch.Ops {
		t := b.tree(op.Store)
		if op.Value == nil {
			if old, ok := t.Delete(item{key: op.Key}); ok {
				b.bytes[op.Store] -= int64(len(old.key) + len(old.value))
			}
			continue
		}
		if old, ok := t.ReplaceOrInsert(item{bytes.Clone(op.Key), bytes.Clone(op.Value)}); ok {
			b.bytes[op.Store] -= int64(len(old.key) + len(old.value))
		}
		b.bytes[op.Store] += int64(len(op.Key) + len(op.Value))
	}
	for s, o := range batch.Offsets {
		b.offsets[s] = o
	}
	return nil
}

// Offset implements state.Backend.
func (b *Backend) Offset(store string) (int64, error) {
	if b.closed {
		return 0, state.ErrClosed
	}
	if o, ok := b.offsets[store]; ok {
		return o, nil
	}
	return state.NoOffset, nil
}

// Wipe implements state.Backend.
func (b *Backend) Wipe(store string) error {
	if b.closed {
		return state.ErrClosed
	}
	delete(b.stores, store)
	delete(b.offsets, store)
	delete(b.bytes, store)
	return nil
}

// ApproxBytes returns the bytes of store's keys and values.
func (b *Backend) ApproxBytes(store string) (int64, error) {
	if b.closed {
		return 0, state.ErrClosed
	}
	return b.bytes[store], nil
}

// Close implements state.Backend.
func (b *Backend) Close() error {
	b.closed = true
	b.stores = nil
	return nil
}

// NewIter implements state.Backend. The iterator walks a snapshot of the
// keys taken when it is created (values are copied on creation).
func (b *Backend) NewIter(store string, lower, upper []byte) stream.Iterator {
	if b.closed {
		return &iter{err: state.ErrClosed}
	}
	var items []item
	visit := func(it item) bool {
		if upper != nil && bytes.Compare(it.key, upper) >= 0 {
			return false
		}
		items = append(items, it)
		return true
	}
	t := b.tree(store)
	if lower == nil {
		t.Ascend(visit)
	} else {
		t.AscendGreaterOrEqual(item{key: lower}, visit)
	}
	return &iter{items: items, pos: -1}
}

type iter struct {
	items []item
	pos   int
	err   error
}

func (it *iter) Next() bool {
	if it.err != nil || it.pos+1 >= len(it.items) {
		it.pos = len(it.items)
		return false
	}
	it.pos++
	return true
}

func (it *iter) Key() []byte   { return bytes.Clone(it.items[it.pos].key) }
func (it *iter) Value() []byte { return bytes.Clone(it.items[it.pos].value) }
func (it *iter) Err() error    { return it.err }
func (it *iter) Close() error  { it.items = nil; return nil }
