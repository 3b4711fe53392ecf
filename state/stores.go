package state

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/google/btree"

	"github.com/samsa-go/samsa/stream"
)

// ErrReadOnly is returned by writes to a store that mirrors a topic (a
// table read from a topic): the topic is its only writer.
var ErrReadOnly = errors.New("state: store is read-only")

// Changelog receives the changelog records of a task's stores. The runner
// implements it with a Kafka producer; it learns each record's offset when
// the broker acknowledges it.
type Changelog interface {
	// Write sends one record to store's changelog. A nil value is a
	// tombstone. The slices must not be modified afterwards.
	Write(store string, key, value []byte)
}

// entryOverhead approximates the memory of a cache entry beyond its key
// and value bytes: its map slot (with the map's spare room), the entry
// struct, and the allocations' headers and rounding. Measured, not
// guessed: a map of a million entries costs about this per entry.
const entryOverhead = 160

// TaskStores are the stores of one task: a write-back cache in front of
// the task's Backend, and the commit protocol that keeps the backend in
// step with the changelog and the committed input offsets.
//
// Writes go to the cache and are visible to the task's reads at once. At a
// commit the runner calls, in this order:
//
//  1. Flush, which writes each key changed since the last commit once
//     (its latest value or a tombstone) to the changelog: repeated updates
//     of a key collapse into one record;
//  2. (the runner waits for the changelog writes to be acknowledged and
//     commits the input offsets, recording the changelog offsets with
//     them);
//  3. Apply, which writes the flushed changes to the backend atomically
//     with the changelog offsets they reflect.
//
// So the backend never holds the effect of an input whose offset is not
// committed. TaskStores is used by one goroutine at a time.
type TaskStores struct {
	backend   Backend
	log       Changelog
	stores    map[string]*Store
	order     []*Store // by name, for deterministic flushes
	maxBytes  int      // cache bound
	bytes     int      // cached bytes, clean and dirty
	dirtyB    int      // bytes of dirty entries
	pending   Batch    // flushed to the changelog, not yet applied
	flushedAt map[string]bool

	undoing bool        // a record is being tracked (see undo.go)
	undo    []undoEntry // its changes, oldest first
}

// NewTaskStores returns the stores of specs over backend, with a cache of
// at most cacheBytes (0 disables caching of clean entries; dirty entries
// are always held until the next commit).
func NewTaskStores(backend Backend, log Changelog, specs []stream.StoreSpec, cacheBytes int) *TaskStores {
	ts := &TaskStores{backend: backend, log: log, stores: map[string]*Store{}, maxBytes: cacheBytes}
	for _, spec := range specs {
		s := &Store{name: spec.Name, spec: spec, ts: ts, cache: map[string]*entry{}}
		ts.stores[spec.Name] = s
		ts.order = append(ts.order, s)
	}
	slices.SortFunc(ts.order, func(a, b *Store) int { return bytes.Compare([]byte(a.name), []byte(b.name)) })
	return ts
}

// SetCacheBytes changes the cache bound, evicting if needed.
func (ts *TaskStores) SetCacheBytes(n int) {
	ts.maxBytes = n
	ts.evict()
}

// Backend returns the backend under the stores.
func (ts *TaskStores) Backend() Backend { return ts.backend }

// Store returns the named store, or nil.
func (ts *TaskStores) Store(name string) *Store { return ts.stores[name] }

// Stores returns the stores, ordered by name.
func (ts *TaskStores) Stores() []*Store { return ts.order }

// NeedsCommit reports whether the changes held in the cache exceed its
// bound, so the runner should commit early.
func (ts *TaskStores) NeedsCommit() bool { return ts.dirtyB > ts.maxBytes && ts.maxBytes > 0 }

// Dirty reports whether any store changed since the last Flush.
func (ts *TaskStores) Dirty() bool {
	for _, s := range ts.order {
		if len(s.dirty) > 0 {
			return true
		}
	}
	return false
}

// Flush writes every key changed since the last Flush to its store's
// changelog, in the order the keys were first changed, and stages the
// changes for Apply. It returns how many records it wrote per store.
// Stores that mirror a topic write no changelog.
func (ts *TaskStores) Flush() map[string]int {
	written := map[string]int{}
	for _, s := range ts.order {
		for _, k := range s.dirty {
			e := s.cache[k]
			e.dirty, e.pending = false, true
			key := []byte(k)
			if s.spec.Changelog == "" {
				ts.log.Write(s.name, key, e.value)
				written[s.name]++
			}
			if e.value == nil {
				ts.pending.Delete(s.name, key)
			} else {
				ts.pending.Put(s.name, key, e.value)
			}
			ts.dirtyB -= e.size(k)
		}
		s.pendingKeys = append(s.pendingKeys, s.dirty...)
		s.dirty = s.dirty[:0]
	}
	return written
}

// Apply writes what Flush staged to the backend, atomically with offsets:
// for each store, the changelog offset (for a store that mirrors a topic,
// the topic's offset) the store reflects once the batch is applied. Call
// it only after the input offsets that caused the changes are committed.
func (ts *TaskStores) Apply(offsets map[string]int64) error {
	for store, off := range offsets {
		ts.pending.SetOffset(store, off)
	}
	if ts.pending.Len() == 0 && len(ts.pending.Offsets) == 0 {
		return nil
	}
	if err := ts.backend.Apply(&ts.pending); err != nil {
		return err
	}
	ts.pending.Reset()
	for _, s := range ts.order {
		for _, k := range s.pendingKeys {
			if e := s.cache[k]; e != nil {
				e.pending = false
				if e.value == nil && !e.dirty {
					// An applied delete: the backend answers for it now.
					ts.bytes -= e.size(k)
					delete(s.cache, k)
				}
				if !e.dirty && s.overlay != nil {
					s.overlay.Delete(k)
				}
			}
		}
		s.pendingKeys = s.pendingKeys[:0]
	}
	ts.evict()
	return nil
}

// Touch marks key of store as changed with its current value, so the next
// Flush writes that value (or a tombstone) to the changelog again. The
// runner uses it to overwrite changelog records left by a crashed
// instance after the last commit.
func (ts *TaskStores) Touch(store string, key []byte) error {
	s := ts.stores[store]
	if s == nil {
		return fmt.Errorf("state: no store %q", store)
	}
	v, found, err := s.get(key)
	if err != nil {
		return err
	}
	if !found {
		v = nil
	}
	s.set(key, v)
	return nil
}

// evict drops clean entries while the cache is over its bound. Which
// entries go is arbitrary: eviction changes speed, never results.
func (ts *TaskStores) evict() {
	if ts.bytes <= ts.maxBytes {
		return
	}
	for _, s := range ts.order {
		evicted := 0
		for k, e := range s.cache {
			if ts.bytes <= ts.maxBytes*3/4 {
				break
			}
			if !e.dirty && !e.pending {
				ts.bytes -= e.size(k)
				delete(s.cache, k)
				evicted++
			}
		}
		if evicted > len(s.cache) {
			// A Go map never shrinks: after evicting most of it, move
			// the rest to a fresh one so the memory goes back.
			fresh := make(map[string]*entry, len(s.cache))
			maps.Copy(fresh, s.cache)
			s.cache = fresh
		}
		if ts.bytes <= ts.maxBytes*3/4 {
			return
		}
	}
}

// Store is one named store of a task: the stream.Store processors use.
type Store struct {
	name        string
	spec        stream.StoreSpec
	ts          *TaskStores
	cache       map[string]*entry
	dirty       []string // keys changed since the last Flush, in order
	pendingKeys []string // keys flushed, not yet applied

	dirtyMark int         // len(dirty) when the current record began (see undo.go)
	limit     recordLimit // of its changelog topic (see limits.go)

	// overlay holds, sorted, the keys that are dirty or pending (and, after
	// a rollback, perhaps some that no longer are), so that an iterator
	// finds the changes in its range without a pass over all of them. It
	// is built by the first iterator: stores never scanned never pay for
	// it.
	overlay *btree.BTreeG[string]
}

var _ stream.Store = (*Store)(nil)

type entry struct {
	value   []byte // nil: deleted
	dirty   bool   // changed since the last Flush
	pending bool   // flushed, not yet applied to the backend
}

func (e *entry) size(key string) int { return len(key) + len(e.value) + entryOverhead }

// Name returns the store's name.
func (s *Store) Name() string { return s.name }

// Spec returns the store's declaration.
func (s *Store) Spec() stream.StoreSpec { return s.spec }

// get returns the value of key without copying it; the caller must not
// keep or modify it.
func (s *Store) get(key []byte) ([]byte, bool, error) {
	if e, ok := s.cache[string(key)]; ok {
		return e.value, e.value != nil, nil
	}
	v, err := s.ts.backend.Get(s.name, key)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		// The local store failing is no fault of the record being
		// processed: never skip records over it.
		return nil, false, stream.Fatal(err)
	}
	if s.ts.maxBytes > 0 {
		k := string(key)
		e := &entry{value: v}
		s.cache[k] = e
		s.ts.bytes += e.size(k)
		s.ts.evict()
	}
	return v, true, nil
}

// Get implements stream.Store.
func (s *Store) Get(key []byte) ([]byte, error) {
	v, found, err := s.get(key)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

// Put implements stream.Store.
func (s *Store) Put(key, value []byte) error {
	if s.spec.Changelog != "" {
		return fmt.Errorf("%w: %s mirrors topic %s", ErrReadOnly, s.name, s.spec.Changelog)
	}
	if value == nil {
		value = []byte{}
	}
	if err := s.checkSize(key, value); err != nil {
		return err
	}
	s.set(key, value)
	return nil
}

// Delete implements stream.Store.
func (s *Store) Delete(key []byte) error {
	if s.spec.Changelog != "" {
		return fmt.Errorf("%w: %s mirrors topic %s", ErrReadOnly, s.name, s.spec.Changelog)
	}
	s.set(key, nil)
	return nil
}

// Mirror applies a record of the topic a read-only store mirrors: value
// nil deletes key.
func (s *Store) Mirror(key, value []byte) {
	if value == nil {
		s.set(key, nil)
		return
	}
	s.set(key, value)
}

// set records a change of key to value (nil: deleted) in the cache.
func (s *Store) set(key, value []byte) {
	ts := s.ts
	e, ok := s.cache[string(key)]
	k := string(key)
	s.remember(k, e, ok)
	if !ok {
		e = &entry{}
		s.cache[k] = e
	} else {
		ts.bytes -= e.size(k)
		if e.dirty {
			ts.dirtyB -= e.size(k)
		}
	}
	// A new slice every time, never a write over the old value: the old
	// one may be staged for the backend, in a changelog record, or lent
	// to a reader (see borrower).
	e.value = nil
	if value != nil {
		e.value = bytes.Clone(value)
	}
	if !e.dirty {
		e.dirty = true
		s.dirty = append(s.dirty, k)
		if s.overlay != nil {
			s.overlay.ReplaceOrInsert(k)
		}
	}
	ts.bytes += e.size(k)
	ts.dirtyB += e.size(k)
	if ts.bytes > ts.maxBytes && ts.bytes-ts.dirtyB > ts.maxBytes/4 {
		ts.evict() // enough clean entries to be worth it
	}
}

// Range implements stream.Store.
func (s *Store) Range(start, end []byte) stream.Iterator {
	return s.iter(start, end)
}

// Prefix implements stream.Store.
func (s *Store) Prefix(prefix []byte) stream.Iterator {
	return s.iter(prefix, PrefixEnd(prefix))
}

// iter merges the backend's keys with the changes not yet applied to it,
// which it takes from the overlay index: its cost grows with the changes
// in its range, not with all the changes of the commit interval.
func (s *Store) iter(lo, hi []byte) stream.Iterator {
	if s.overlay == nil {
		s.overlay = btree.NewG(32, func(a, b string) bool { return a < b })
		for _, keys := range [][]string{s.dirty, s.pendingKeys} {
			for _, k := range keys {
				s.overlay.ReplaceOrInsert(k)
			}
		}
	}
	var over, stale []string
	visit := func(k string) bool {
		if hi != nil && k >= string(hi) {
			return false
		}
		if e := s.cache[k]; e != nil && (e.dirty || e.pending) {
			over = append(over, k)
		} else {
			stale = append(stale, k) // left by a rollback
		}
		return true
	}
	if lo == nil {
		s.overlay.Ascend(visit)
	} else {
		s.overlay.AscendGreaterOrEqual(string(lo), visit)
	}
	for _, k := range stale {
		s.overlay.Delete(k)
	}
	m := &mergeIter{base: s.ts.backend.NewIter(s.name, lo, hi), over: over, s: s}
	m.advanceBase()
	return m
}

// mergeIter yields the union of a backend iterator and an overlay of
// cached changes; the overlay wins on equal keys and hides deleted keys.
type mergeIter struct {
	s        *Store
	base     stream.Iterator
	baseKey  []byte // the base's current key, nil when exhausted
	over     []string
	key, val []byte
	err      error
}

func (m *mergeIter) advanceBase() {
	if m.base.Next() {
		m.baseKey = m.base.Key()
		return
	}
	m.baseKey = nil
	if err := m.base.Err(); err != nil {
		m.err = stream.Fatal(err) // as in get
	}
}

func (m *mergeIter) Next() bool {
	for m.err == nil {
		haveOver := len(m.over) > 0
		if m.baseKey == nil && !haveOver {
			return false
		}
		if haveOver && (m.baseKey == nil || m.over[0] <= string(m.baseKey)) {
			k := m.over[0]
			m.over = m.over[1:]
			if m.baseKey != nil && k == string(m.baseKey) {
				m.advanceBase()
			}
			e := m.s.cache[k]
			if e == nil || e.value == nil {
				continue // deleted
			}
			m.key, m.val = []byte(k), bytes.Clone(e.value)
			return true
		}
		m.key, m.val = m.baseKey, m.base.Value()
		m.advanceBase()
		return true
	}
	return false
}

func (m *mergeIter) Key() []byte   { return m.key }
func (m *mergeIter) Value() []byte { return m.val }
func (m *mergeIter) Err() error    { return m.err }
func (m *mergeIter) Close() error  { return m.base.Close() }

// PrefixEnd returns the smallest key greater than every key with prefix
// p, or nil if there is none: the upper bound of a prefix scan.
func PrefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
