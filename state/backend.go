package state

import (
	"errors"

	"github.com/samsa-go/samsa/stream"
)

// ErrNotFound is returned for a key a store does not hold. It is
// stream.ErrNotFound, so either name matches with errors.Is.
var ErrNotFound = stream.ErrNotFound

// ErrClosed is returned by a backend used after Close.
var ErrClosed = errors.New("state: store closed")

// NoOffset is the offset of a store that reflects no changelog record.
const NoOffset int64 = -1

// Backend is the local storage of one task's stores: the Pebble database
// (package pebblestore) or memory (package memstore) that holds them on
// this machine. It keeps, atomically with each store's data, the
// changelog offset the data reflects, which is what lets a restart restore
// only the missing tail of the changelog.
//
// A Backend is used by one goroutine at a time.
type Backend interface {
	// Get returns the value of key in store, a copy the caller owns, or
	// ErrNotFound.
	Get(store string, key []byte) ([]byte, error)
	// NewIter iterates over store's keys in [lower, upper); nil bounds
	// are open.
	NewIter(store string, lower, upper []byte) stream.Iterator
	// Apply writes the batch atomically: its puts and deletes together
	// with its offsets. Durability comes from the changelog, so Apply
	// need not sync to disk; after a crash a backend must come back with
	// the data and offsets of some prefix of the batches it applied.
	Apply(b *Batch) error
	// Offset returns the changelog offset store reflects: the offset of
	// the next changelog record to apply, or NoOffset.
	Offset(store string) (int64, error)
	// Wipe deletes store's data and offset.
	Wipe(store string) error
	// Close releases the backend. It is idempotent.
	Close() error
}

// Batch is a set of writes to a Backend's stores, applied atomically.
type Batch struct {
	Ops     []Op
	Offsets map[string]int64 // store -> the changelog offset it reflects after the batch
	bytes   int
}

// Op is one write of a Batch. A nil Value is a delete.
type Op struct {
	Store      string
	Key, Value []byte
}

// Put adds a put to the batch; the batch keeps key and value, which the
// caller must not modify afterwards.
func (b *Batch) Put(store string, key, value []byte) {
	if value == nil {
		value = []byte{}
	}
	b.Ops = append(b.Ops, Op{store, key, value})
	b.bytes += len(key) + len(value)
}

// Delete adds a delete to the batch.
func (b *Batch) Delete(store string, key []byte) {
	b.Ops = append(b.Ops, Op{Store: store, Key: key})
	b.bytes += len(key)
}

// SetOffset records the changelog offset store reflects after the batch.
func (b *Batch) SetOffset(store string, offset int64) {
	if b.Offsets == nil {
		b.Offsets = map[string]int64{}
	}
	b.Offsets[store] = offset
}

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return len(b.Ops) }

// Bytes returns the size of the keys and values in the batch.
func (b *Batch) Bytes() int { return b.bytes }

// Reset empties the batch for reuse.
func (b *Batch) Reset() {
	clear(b.Ops)
	b.Ops = b.Ops[:0]
	clear(b.Offsets)
	b.bytes = 0
}
