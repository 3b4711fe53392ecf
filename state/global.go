package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/samsa-go/samsa/stream"
)

// GlobalStores hold an instance's global tables (see
// [stream.GlobalTable]): each a full copy of its topic, shared by all the
// instance's tasks. One updater (the runner's reader of the topics)
// applies the topics' records in batches, together with the offsets they
// reach, while the tasks read; GlobalStores is safe for that concurrent
// use. The stores are read-only to the tasks.
//
// Each store's data and the offsets of its topic's partitions are kept in
// one Backend, written atomically by each Apply: after a restart the
// updater goes on from the offsets the stores reflect.
type GlobalStores struct {
	mu      sync.Mutex // serializes use of the backend
	backend Backend
	stores  map[string]*GlobalStore
}

// globalOffsets is the backend store holding the partitions' offsets: a
// name no topic can have, so no global store's name.
const globalOffsets = "#offsets"

// NewGlobalStores returns the global stores named names over backend.
func NewGlobalStores(backend Backend, names []string) *GlobalStores {
	g := &GlobalStores{backend: backend, stores: map[string]*GlobalStore{}}
	for _, n := range names {
		g.stores[n] = &GlobalStore{name: n, g: g}
	}
	return g
}

// Store returns the named store, or nil.
func (g *GlobalStores) Store(name string) *GlobalStore { return g.stores[name] }

func offsetKey(store string, partition int32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(store), 0), uint32(partition))
}

// Offset returns the offset of the next record of partition p of store's
// topic to apply, or NoOffset.
func (g *GlobalStores) Offset(store string, p int32) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, err := g.backend.Get(globalOffsets, offsetKey(store, p))
	if errors.Is(err, ErrNotFound) {
		return NoOffset, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("state: global store %s: offset of partition %d has %d bytes", store, p, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// GlobalBatch is a set of writes to global stores with the offsets they
// reach, applied atomically by [GlobalStores.Apply].
type GlobalBatch struct {
	b Batch
}

// Put adds a put of key to value in store (a nil value deletes key, as a
// tombstone in the topic does). The batch keeps the slices.
func (b *GlobalBatch) Put(store string, key, value []byte) {
	if value == nil {
		b.b.Delete(store, key)
		return
	}
	b.b.Put(store, key, value)
}

// SetOffset records that store reflects partition p of its topic up to
// offset (exclusive) once the batch is applied.
func (b *GlobalBatch) SetOffset(store string, p int32, offset int64) {
	b.b.Put(globalOffsets, offsetKey(store, p), binary.BigEndian.AppendUint64(nil, uint64(offset)))
}

// Len returns the number of records in the batch.
func (b *GlobalBatch) Len() int { return b.b.Len() }

// Reset empties the batch.
func (b *GlobalBatch) Reset() { b.b.Reset() }

// Apply applies b atomically.
func (g *GlobalStores) Apply(b *GlobalBatch) error {
	if b.b.Len() == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.backend.Apply(&b.b)
}

// Wipe deletes store's data and offsets.
func (g *GlobalStores) Wipe(store string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.backend.Wipe(store); err != nil {
		return err
	}
	prefix := append([]byte(store), 0)
	it := g.backend.NewIter(globalOffsets, prefix, PrefixEnd(prefix))
	var b Batch
	for it.Next() {
		b.Delete(globalOffsets, it.Key())
	}
	if err := errors.Join(it.Err(), it.Close()); err != nil {
		return err
	}
	return g.backend.Apply(&b)
}

// Close closes the backend.
func (g *GlobalStores) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.backend.Close()
}

// GlobalStore is one global table's store as the tasks see it: reads of
// the instance's copy, safe for concurrent use; writes fail with
// [ErrReadOnly] (the table's topic is its only writer).
type GlobalStore struct {
	name string
	g    *GlobalStores
}

var _ stream.Store = (*GlobalStore)(nil)

// Get implements stream.Store.
func (s *GlobalStore) Get(key []byte) ([]byte, error) {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	return s.g.backend.Get(s.name, key)
}

// Put implements stream.Store: it fails, the store is read-only.
func (s *GlobalStore) Put(key, value []byte) error {
	return fmt.Errorf("%w: global table %s is written by its topic only", ErrReadOnly, s.name)
}

// Delete implements stream.Store: it fails, the store is read-only.
func (s *GlobalStore) Delete(key []byte) error {
	return fmt.Errorf("%w: global table %s is written by its topic only", ErrReadOnly, s.name)
}

// Range implements stream.Store. The iterator sees the store as of its
// creation, and holds nothing the updater waits for.
func (s *GlobalStore) Range(start, end []byte) stream.Iterator {
	return s.snapshot(start, end)
}

// Prefix implements stream.Store, as Range does.
func (s *GlobalStore) Prefix(prefix []byte) stream.Iterator {
	return s.snapshot(prefix, PrefixEnd(prefix))
}

// snapshot copies the keys in [lo, hi) into an iterator: global tables
// are small, and a copy keeps a slow reader from holding the updater up.
func (s *GlobalStore) snapshot(lo, hi []byte) stream.Iterator {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	it := s.g.backend.NewIter(s.name, lo, hi)
	snap := &sliceIter{pos: -1}
	for it.Next() {
		snap.keys = append(snap.keys, it.Key())
		snap.values = append(snap.values, it.Value())
	}
	snap.err = errors.Join(it.Err(), it.Close())
	return snap
}

// sliceIter iterates over copied keys and values.
type sliceIter struct {
	keys, values [][]byte
	pos          int
	err          error
}

func (i *sliceIter) Next() bool {
	if i.err != nil || i.pos+1 >= len(i.keys) {
		i.pos = len(i.keys)
		return false
	}
	i.pos++
	return true
}

func (i *sliceIter) Key() []byte   { return i.keys[i.pos] }
func (i *sliceIter) Value() []byte { return i.values[i.pos] }
func (i *sliceIter) Err() error    { return i.err }
func (i *sliceIter) Close() error  { i.keys, i.values = nil, nil; return nil }
