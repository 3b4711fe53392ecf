package state

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// KeyValue is a typed view of a [stream.Store]: keys and values go
// through serdes. Keys are ordered by their encoded bytes, so range scans
// over a key type are only meaningful for encodings that sort like the
// keys (strings do; big-endian integers do for non-negative values).
//
// Values returned are the caller's to keep.
type KeyValue[K, V any] struct {
	store stream.Store
	key   serde.Serde[K]
	value serde.Serde[V]
}

// Typed returns a typed view of store.
func Typed[K, V any](store stream.Store, key serde.Serde[K], value serde.Serde[V]) *KeyValue[K, V] {
	return &KeyValue[K, V]{store: store, key: key, value: value}
}

// borrower is implemented by stores that can lend a value without copying
// it, for a caller that only decodes it.
type borrower interface {
	get(key []byte) ([]byte, bool, error)
}

// Get returns the value of k and whether it was found.
func (kv *KeyValue[K, V]) Get(k K) (V, bool, error) {
	kb, err := kv.key.Encode(k)
	if err != nil {
		var zero V
		return zero, false, fmt.Errorf("state: encode key: %w", err)
	}
	return kv.GetEncoded(kb)
}

// GetEncoded is [KeyValue.Get] for a key already encoded with the view's
// key serde.
func (kv *KeyValue[K, V]) GetEncoded(kb []byte) (V, bool, error) {
	var zero V
	var err error
	var vb []byte
	if b, ok := kv.store.(borrower); ok {
		var found bool
		if vb, found, err = b.get(kb); err != nil || !found {
			return zero, false, err
		}
		if _, ok := kv.value.(serde.Aliasing); ok {
			vb = bytes.Clone(vb) // the value read is the caller's to keep
		}
	} else {
		vb, err = kv.store.Get(kb)
		if errors.Is(err, ErrNotFound) {
			return zero, false, nil
		}
		if err != nil {
			return zero, false, err
		}
	}
	v, err := kv.value.Decode(vb)
	if err != nil {
		return zero, false, fmt.Errorf("state: decode value: %w", err)
	}
	return v, true, nil
}

// Put sets the value of k.
func (kv *KeyValue[K, V]) Put(k K, v V) error {
	kb, err := kv.key.Encode(k)
	if err != nil {
		return fmt.Errorf("state: encode key: %w", err)
	}
	return kv.PutEncoded(kb, v)
}

// PutEncoded is [KeyValue.Put] for a key already encoded with the view's
// key serde.
func (kv *KeyValue[K, V]) PutEncoded(kb []byte, v V) error {
	vb, err := kv.value.Encode(v)
	if err != nil {
		return fmt.Errorf("state: encode value: %w", err)
	}
	return kv.store.Put(kb, vb)
}

// Delete removes k.
func (kv *KeyValue[K, V]) Delete(k K) error {
	kb, err := kv.key.Encode(k)
	if err != nil {
		return fmt.Errorf("state: encode key: %w", err)
	}
	return kv.store.Delete(kb)
}

// Range iterates over the keys in [from, to) by encoded order.
func (kv *KeyValue[K, V]) Range(from, to K) *Iter[K, V] {
	fb, err1 := kv.key.Encode(from)
	tb, err2 := kv.key.Encode(to)
	if err := errors.Join(err1, err2); err != nil {
		return &Iter[K, V]{err: fmt.Errorf("state: encode key: %w", err)}
	}
	return &Iter[K, V]{it: kv.store.Range(fb, tb), kv: kv}
}

// All iterates over every key.
func (kv *KeyValue[K, V]) All() *Iter[K, V] {
	return &Iter[K, V]{it: kv.store.Range(nil, nil), kv: kv}
}

// Prefix iterates over the keys whose encoding starts with prefix's.
func (kv *KeyValue[K, V]) Prefix(prefix K) *Iter[K, V] {
	pb, err := kv.key.Encode(prefix)
	if err != nil {
		return &Iter[K, V]{err: fmt.Errorf("state: encode key: %w", err)}
	}
	return &Iter[K, V]{it: kv.store.Prefix(pb), kv: kv}
}

// Iter is a typed iterator. Close must be called.
type Iter[K, V any] struct {
	it  stream.Iterator
	kv  *KeyValue[K, V]
	k   K
	v   V
	err error
}

// Next advances to the next key; it returns false at the end or on error.
func (i *Iter[K, V]) Next() bool {
	if i.err != nil || i.it == nil || !i.it.Next() {
		return false
	}
	k, err := i.kv.key.Decode(i.it.Key())
	if err != nil {
		i.err = fmt.Errorf("state: decode key: %w", err)
		return false
	}
	v, err := i.kv.value.Decode(i.it.Value())
	if err != nil {
		i.err = fmt.Errorf("state: decode value: %w", err)
		return false
	}
	i.k, i.v = k, v
	return true
}

// Key returns the current key.
func (i *Iter[K, V]) Key() K { return i.k }

// Value returns the current value.
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
