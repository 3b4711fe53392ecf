package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/samsa-go/samsa/state"
)

// NewLoad implements state.Loader: a restore's records are encoded
// straight into Pebble batches, and a batch is full once it reserves a
// sixty-fourth of the memtable size.
//
// Why that measure: Pebble reserves room in the memtable for each entry
// of a batch at the skiplist's largest node size (nodeReserve bytes
// beyond the key and the value; a node takes about 40 on average), and it
// moves on to a new memtable when the room left is less than the next
// batch's reservation. Large batches therefore leave much of each
// memtable empty (a batch of 16k small records reserves 3.5 MB: a quarter
// of a 16 MB memtable), the memtables fill sooner, and Pebble flushes
// them sooner: during the restore, on the cores the restore needs. Small
// batches fill the memtables, and cost little more per record to apply.
func (d *DB) NewLoad(store string) state.Load {
	return &load{
		d: d, store: store, full: d.loadReserve,
		prefix: appendPrefix(nil, dataSpace, store),
		meta:   appendPrefix(nil, metaSpace, store),
	}
}

// nodeReserve is what Pebble reserves in a memtable for an entry beyond
// its key and value: arenaskl.MaxNodeSize less the key and the value,
// i.e. a node with the tallest tower (184 bytes), the key's 8-byte
// trailer and alignment (3).
const nodeReserve = 195

// loadReserve returns the memtable reservation at which a load's batch
// is full, for memtables of memTableSize bytes.
func loadReserve(memTableSize uint64) int {
	return max(int(memTableSize/64), 64<<10)
}

// load is a state.Load into a DB. Keys and values are copied into the
// batch as they are written.
type load struct {
	d       *DB
	store   string
	prefix  []byte // of the store's data keys
	meta    []byte // the key of the store's offset
	b       *pebble.Batch
	reserve int // memtable room the batch reserves
	full    int // reserve at which the batch is full
}

func (l *load) batch() *pebble.Batch {
	if l.b == nil {
		l.b = l.d.db.NewBatch()
	}
	return l.b
}

func (l *load) Put(key, value []byte) {
	op := l.batch().SetDeferred(len(l.prefix)+len(key), len(value))
	copy(op.Key[copy(op.Key, l.prefix):], key)
	copy(op.Value, value)
	op.Finish()
	l.reserve += nodeReserve + len(op.Key) + len(value)
}

func (l *load) Delete(key []byte) {
	op := l.batch().DeleteDeferred(len(l.prefix) + len(key))
	copy(op.Key[copy(op.Key, l.prefix):], key)
	op.Finish()
	l.reserve += nodeReserve + len(op.Key)
}

func (l *load) Full() bool { return l.reserve >= l.full }

func (l *load) Commit(offset int64) error {
	if l.d.closed {
		return state.ErrClosed
	}
	b := l.batch()
	var off [8]byte
	binary.BigEndian.PutUint64(off[:], uint64(offset))
	if err := b.Set(l.meta, off[:], nil); err != nil {
		return fmt.Errorf("pebblestore: restore %s: %w", l.store, err)
	}
	if err := l.d.wait(func() error { return l.d.db.Apply(b, pebble.NoSync) }); err != nil {
		if l.d.stuck() {
			l.b = nil // still in Pebble's hands
		}
		var de *DiskError
		if errors.As(err, &de) {
			return err
		}
		return fmt.Errorf("pebblestore: restore %s into %s: %w", l.store, l.d.dir, err)
	}
	b.Reset() // Apply copied the batch into the memtable
	l.reserve = 0
	return nil
}

func (l *load) Close() error {
	if l.b == nil {
		return nil
	}
	err := l.b.Close()
	l.b = nil
	return err
}
