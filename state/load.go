package state

// Loader is implemented by backends that take a restore's records faster
// than through Apply of Batches: a restore writes millions of records in
// changelog order, and a backend can encode them straight into its own
// batches, sized by its own measure. NewLoad picks this path when a
// backend offers it.
type Loader interface {
	// NewLoad returns a Load of store's changelog records.
	NewLoad(store string) Load
}

// Load writes a store's changelog records, as a restore reads them, into
// its backend. The restore writes records with Put and Delete, asks Full
// after each, and when Full reports true, or when it reaches the end of
// what it restores, commits them with the changelog offset they bring the
// store to. A Load is used by one goroutine; Close it when done.
type Load interface {
	// Put writes key's value. The load may keep key and value until the
	// next Commit: the caller must not modify them meanwhile. A nil
	// value is written as an empty one.
	Put(key, value []byte)
	// Delete deletes key, with the same rule as Put for key.
	Delete(key []byte)
	// Full reports whether the writes since the last Commit are worth
	// committing now: a batch big enough to amortize its cost and small
	// enough for the backend to take well.
	Full() bool
	// Commit applies the writes since the last Commit, atomically with
	// offset as the changelog offset the store reflects.
	Commit(offset int64) error
	// Close releases the load. Writes since the last Commit are dropped.
	Close() error
}

// NewLoad returns a Load of store's changelog records into b: b's own if
// b is a Loader, otherwise one that applies Batches of loadBatch writes.
func NewLoad(b Backend, store string) Load {
	if l, ok := b.(Loader); ok {
		return l.NewLoad(store)
	}
	return &batchLoad{b: b, store: store}
}

// loadBatch is how many writes a batchLoad applies at once.
const loadBatch = 16 << 10

// batchLoad is a Load through Backend.Apply.
type batchLoad struct {
	b     Backend
	store string
	batch Batch
}

func (l *batchLoad) Put(key, value []byte) { l.batch.Put(l.store, key, value) }
func (l *batchLoad) Delete(key []byte)     { l.batch.Delete(l.store, key) }
func (l *batchLoad) Full() bool            { return l.batch.Len() >= loadBatch }

func (l *batchLoad) Commit(offset int64) error {
	l.batch.SetOffset(l.store, offset)
	err := l.b.Apply(&l.batch)
	l.batch.Reset()
	return err
}

func (l *batchLoad) Close() error {
	l.batch.Reset()
	return nil
}
