package stream

import "errors"

// ErrNotFound is returned by [Store.Get] for a key the store does not hold.
var ErrNotFound = errors.New("state: not found")

// Store is a task's key-value state: keys and values are bytes, ordered by
// key (bytes.Compare). A Store belongs to one task and is used by one
// goroutine at a time. Every write is also written to the store's
// changelog topic, so the store survives the loss of its machine.
//
// Values returned by Get and by iterators' Value after Next are the
// caller's to keep. Keys and values passed to Put are copied; the caller
// may reuse them.
type Store interface {
	// Get returns the value of key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Put sets the value of key. A nil value is stored as an empty
	// value; use Delete to remove a key.
	Put(key, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(key []byte) error
	// Range iterates over the keys in [start, end) in order. A nil start
	// or end leaves that side unbounded.
	Range(start, end []byte) Iterator
	// Prefix iterates over the keys that start with prefix, in order.
	Prefix(prefix []byte) Iterator
}

// Iterator walks keys of a [Store] in order. It sees the store as it was
// when the iterator was created plus, possibly, later writes of the task;
// a task should not write to a store while iterating it. Close releases
// the iterator and must be called.
//
//	it := store.Prefix(p)
//	defer it.Close()
//	for it.Next() {
//		use(it.Key(), it.Value())
//	}
//	if err := it.Err(); err != nil { ... }
type Iterator interface {
	Next() bool
	Key() []byte
	Value() []byte
	Err() error
	Close() error
}

// StoreSpec declares a key-value store of a job.
type StoreSpec struct {
	// Name names the store. Its changelog topic is
	// "<job>-<name>-changelog". Names are unique within a job.
	Name string
	// InMemory keeps the store in memory instead of in Pebble on local
	// disk. An in-memory store is restored from its changelog in full
	// every time its task starts.
	InMemory bool
	// Changelog, if not empty, names an existing topic to restore the
	// store from instead of the store's own changelog topic. The store is
	// then read-only from processors: used for tables read from a
	// compacted topic, which is its own changelog.
	Changelog string
}
