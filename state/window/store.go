package window

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Fixed is a typed store of fixed-size windows (tumbling, hopping): one
// value per (key, window start), laid out start first (see the package
// documentation). Like the store under it, it belongs to one task and is
// used by one goroutine at a time; values it returns are the caller's.
type Fixed[K, V any] struct {
	store stream.Store
	size  int64
	key   serde.Serde[K]
	value serde.Serde[V]
	buf   []byte
}

// NewFixed returns a typed view of store as a store of windows of size
// milliseconds.
func NewFixed[K, V any](store stream.Store, size int64, key serde.Serde[K], value serde.Serde[V]) *Fixed[K, V] {
	return &Fixed[K, V]{store: store, size: size, key: key, value: value}
}

func (f *Fixed[K, V]) storeKey(k K, start int64) ([]byte, error) {
	kb, err := f.key.Encode(k)
	if err != nil {
		return nil, fmt.Errorf("window: encode key: %w", err)
	}
	f.buf = FixedKey(f.buf[:0], start, kb)
	return f.buf, nil
}

// Get returns the value of window (k, start) and whether it is there.
func (f *Fixed[K, V]) Get(k K, start int64) (V, bool, error) {
	var zero V
	sk, err := f.storeKey(k, start)
	if err != nil {
		return zero, false, err
	}
	return get(f.store, sk, f.value)
}

// Put sets the value of window (k, start).
func (f *Fixed[K, V]) Put(k K, start int64, v V) error {
	sk, err := f.storeKey(k, start)
	if err != nil {
		return err
	}
	vb, err := f.value.Encode(v)
	if err != nil {
		return fmt.Errorf("window: encode value: %w", err)
	}
	return f.store.Put(sk, vb)
}

// Delete removes window (k, start).
func (f *Fixed[K, V]) Delete(k K, start int64) error {
	sk, err := f.storeKey(k, start)
	if err != nil {
		return err
	}
	return f.store.Delete(sk)
}

// Starting iterates over the windows whose start is in [from, to), in
// order of start, then of encoded key. The task must not write to the
// store until it closes the iterator.
func (f *Fixed[K, V]) Starting(from, to int64) *Iter[K, V] {
	lo, hi := AppendTime(nil, from), AppendTime(nil, to)
	return &Iter[K, V]{it: f.store.Range(lo, hi), key: f.key, value: f.value,
		split: func(b []byte) ([]byte, int64, int64, error) {
			start, k, err := SplitFixedKey(b)
			return k, start, start + f.size, err
		}}
}

// Indexed is a typed store of windows of any size (sessions) with two
// indexes, by key and by end (see the package documentation). Like the
// store under it, it belongs to one task and is used by one goroutine at
// a time; values it returns are the caller's.
type Indexed[K, V any] struct {
	store stream.Store
	key   serde.Serde[K]
	value serde.Serde[V]
	buf   []byte
}

// NewIndexed returns a typed view of store as an indexed window store.
func NewIndexed[K, V any](store stream.Store, key serde.Serde[K], value serde.Serde[V]) *Indexed[K, V] {
	return &Indexed[K, V]{store: store, key: key, value: value}
}

func (x *Indexed[K, V]) encodeKey(k K) ([]byte, error) {
	kb, err := x.key.Encode(k)
	if err != nil {
		return nil, fmt.Errorf("window: encode key: %w", err)
	}
	return kb, nil
}

// Get returns the value of window (k, start, end) and whether it is there.
func (x *Indexed[K, V]) Get(k K, start, end int64) (V, bool, error) {
	var zero V
	kb, err := x.encodeKey(k)
	if err != nil {
		return zero, false, err
	}
	x.buf = KeyIndexKey(x.buf[:0], kb, start, end)
	return get(x.store, x.buf, x.value)
}

// Put sets the value of window (k, start, end), creating it if needed.
func (x *Indexed[K, V]) Put(k K, start, end int64, v V) error {
	kb, err := x.encodeKey(k)
	if err != nil {
		return err
	}
	vb, err := x.value.Encode(v)
	if err != nil {
		return fmt.Errorf("window: encode value: %w", err)
	}
	x.buf = KeyIndexKey(x.buf[:0], kb, start, end)
	if err := x.store.Put(x.buf, vb); err != nil {
		return err
	}
	x.buf = EndIndexKey(x.buf[:0], kb, start, end)
	return x.store.Put(x.buf, nil)
}

// Delete removes window (k, start, end).
func (x *Indexed[K, V]) Delete(k K, start, end int64) error {
	kb, err := x.encodeKey(k)
	if err != nil {
		return err
	}
	return x.deleteEncoded(kb, start, end)
}

func (x *Indexed[K, V]) deleteEncoded(kb []byte, start, end int64) error {
	x.buf = KeyIndexKey(x.buf[:0], kb, start, end)
	if err := x.store.Delete(x.buf); err != nil {
		return err
	}
	x.buf = EndIndexKey(x.buf[:0], kb, start, end)
	return x.store.Delete(x.buf)
}

// Fetch iterates over the windows of k that end at or after endFrom, in
// order of end, then start. The task must not write to the store until it
// closes the iterator.
func (x *Indexed[K, V]) Fetch(k K, endFrom int64) *Iter[K, V] {
	kb, err := x.encodeKey(k)
	if err != nil {
		return &Iter[K, V]{err: err}
	}
	lo := KeyIndexPrefix(nil, kb, endFrom)
	hi := state.PrefixEnd(KeyIndexPrefix(nil, kb))
	return &Iter[K, V]{it: x.store.Range(lo, hi), key: x.key, value: x.value, split: SplitKeyIndexKey}
}

// Ending iterates over the windows, of every key, whose end is in [from,
// to), in order of end, then start, then encoded key. Its values are
// looked up in the by-key index as it goes. The task must not write to
// the store until it closes the iterator.
func (x *Indexed[K, V]) Ending(from, to int64) *Iter[K, V] {
	lo, hi := EndIndexBound(nil, from), EndIndexBound(nil, to)
	return &Iter[K, V]{it: x.store.Range(lo, hi), key: x.key, value: x.value, split: SplitEndIndexKey,
		lookup: func(kb []byte, start, end int64) ([]byte, error) {
			return x.store.Get(KeyIndexKey(nil, kb, start, end))
		}}
}

// Iter is an iterator over windows. Close must be called.
type Iter[K, V any] struct {
	it     stream.Iterator
	key    serde.Serde[K]
	value  serde.Serde[V]
	split  func([]byte) (key []byte, start, end int64, err error)
	lookup func(key []byte, start, end int64) ([]byte, error) // the value, if not the entry's own

	kb         []byte
	k          K
	v          V
	start, end int64
	err        error
}

// Next advances to the next window; it returns false at the end or on
// error.
func (i *Iter[K, V]) Next() bool {
	if i.err != nil || i.it == nil || !i.it.Next() {
		return false
	}
	kb, start, end, err := i.split(i.it.Key())
	if err != nil {
		i.err = fmt.Errorf("%w: %x", err, i.it.Key())
		return false
	}
	i.kb = bytes.Clone(kb) // iterator keys are only valid until Next
	vb := i.it.Value()
	if i.lookup != nil {
		if vb, err = i.lookup(i.kb, start, end); err != nil {
			if errors.Is(err, stream.ErrNotFound) {
				err = fmt.Errorf("%w: by-end entry %x has no by-key entry", ErrCorrupt, i.it.Key())
			}
			i.err = err
			return false
		}
	}
	if i.k, err = i.key.Decode(i.kb); err != nil {
		i.err = fmt.Errorf("window: decode key: %w", err)
		return false
	}
	if i.v, err = i.value.Decode(vb); err != nil {
		i.err = fmt.Errorf("window: decode value: %w", err)
		return false
	}
	i.start, i.end = start, end
	return true
}

// Key returns the current window's key.
func (i *Iter[K, V]) Key() K { return i.k }

// KeyBytes returns the current window's encoded key; it is the caller's.
func (i *Iter[K, V]) KeyBytes() []byte { return i.kb }

// Start and End return the current window's bounds, in milliseconds.
func (i *Iter[K, V]) Start() int64 { return i.start }
func (i *Iter[K, V]) End() int64   { return i.end }

// Value returns the current window's value.
func (i *Iter[K, V]) Value() V { return i.v }

// Err returns the error that stopped the iteration, if any.
func (i *Iter[K, V]) Err() error {
	if i.err != nil {
		return i.err
	}
	if i.it != nil {
		return i.it.Err()
	}
	return nil
}

// Close releases the iterator.
func (i *Iter[K, V]) Close() error {
	if i.it == nil {
		return nil
	}
	return i.it.Close()
}

// get reads and decodes the value of key.
func get[V any](s stream.Store, key []byte, value serde.Serde[V]) (V, bool, error) {
	var zero V
	vb, err := s.Get(key)
	if errors.Is(err, stream.ErrNotFound) {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, err
	}
	v, err := value.Decode(vb)
	if err != nil {
		return zero, false, fmt.Errorf("window: decode value: %w", err)
	}
	return v, true, nil
}
