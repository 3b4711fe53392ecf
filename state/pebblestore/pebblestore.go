// Package pebblestore keeps a task's stores in Pebble on local disk: one
// Pebble database per task, each store a key prefix in it, and each
// store's changelog offset written in the same batch as its data.
//
// # Tuning
//
// Durability comes from the changelog topics, so the write-ahead log is
// off and nothing is synced per batch: after a crash the database comes
// back with some earlier batch's data and offsets, consistent with each
// other, and the runner restores the changelog from there. Bloom filters
// keep point reads of missing keys off the disk. The block cache is shared
// by all of an instance's tasks (see [NewCache]); memtables are per task,
// so memory is bounded by cache size + tasks × MemTableSize × 2.
//
// # Identity
//
// Each database directory holds an identity file naming the job, the task
// and the partition count it was created for. [Open] refuses a directory
// whose identity differs ([ErrForeign]) and reports corruption
// ([ErrCorrupt]); the runner wipes such a directory and restores it from
// the changelogs. Pebble's lock file keeps a second process out
// ([ErrLocked]).
//
// # Disk trouble
//
// A write the disk refuses (no space left, a directory made read-only or
// removed) fails the database with a [DiskError]: at Open, or, since
// Pebble writes to disk in the background (a memtable's flush, a
// compaction), at the next Apply, Flush or Close after it. Pebble alone
// would retry the failed flush at once and forever, and stall writes
// once the memtables waiting for it are full. A failed database takes no
// more writes, so what is on disk stays some earlier batch's data with
// its offsets, which the runner restores from once the directory is
// usable again.
package pebblestore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
)

// Options tune a Pebble backend. The zero value means the defaults, filled
// in by EnsureDefaults.
type Options struct {
	// MemTableSize is the size of one memtable. Default: 16 MiB.
	MemTableSize uint64
	// BloomBitsPerKey sets the bloom filters' size; 0 means the default
	// of 10 bits per key, -1 disables them.
	BloomBitsPerKey int
	// Cache is the block cache, shared by the backends of one instance.
	// Nil gives the backend its own cache of CacheSize.
	Cache *pebble.Cache
	// CacheSize is the size of a cache the backend creates for itself.
	// Default: 32 MiB.
	CacheSize int64
}

// EnsureDefaults fills in unset options.
func (o *Options) EnsureDefaults() {
	if o.MemTableSize == 0 {
		o.MemTableSize = 16 << 20
	}
	if o.BloomBitsPerKey == 0 {
		o.BloomBitsPerKey = 10
	}
	if o.CacheSize == 0 {
		o.CacheSize = 32 << 20
	}
}

// Validate reports unusable options.
func (o *Options) Validate() error {
	if o.MemTableSize < 1<<20 {
		return fmt.Errorf("pebblestore: memtable size %d: want at least 1 MiB", o.MemTableSize)
	}
	return nil
}

// NewCache returns a block cache of size bytes to share among backends.
// Release it with Unref once the backends using it are closed.
func NewCache(size int64) *pebble.Cache { return pebble.NewCache(size) }

// Identity is what a store directory was created for.
type Identity struct {
	Job        string `json:"job"`
	Task       string `json:"task"`
	Partitions int32  `json:"partitions"` // of the task's input topics
}

const identityFile = "SAMSA-IDENTITY"

var (
	// ErrForeign is returned by Open for a directory created for another
	// job, task or partition count.
	ErrForeign = errors.New("pebblestore: store directory belongs to something else")
	// ErrCorrupt is returned by Open for a directory Pebble cannot read.
	ErrCorrupt = errors.New("pebblestore: store directory is corrupt")
	// ErrLocked is returned by Open for a directory another process has
	// open.
	ErrLocked = errors.New("pebblestore: store directory is in use by another process")
)

// DB is a Pebble state.Backend. It is not safe for concurrent use.
type DB struct {
	db       *pebble.DB
	dir      string
	ownCache *pebble.Cache
	readOnly bool
	closed   bool
	scratch  []byte
	fail     *failure
	// inside, once the database has failed, receives the result of the
	// call into Pebble that was waiting then (see wait).
	inside chan error
	// reported is set once a method has returned the failure.
	reported bool
	// loadReserve is the memtable room a restore's batch reserves before
	// it is committed (see NewLoad).
	loadReserve int
}

var (
	_ state.Backend = (*DB)(nil)
	_ state.Loader  = (*DB)(nil)
)

// Open opens or creates the store directory dir for id.
func Open(dir string, id Identity, opts Options) (*DB, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := checkIdentity(dir, id); err != nil {
		return nil, err
	}
	// The identity goes in first: a directory with Pebble files and no
	// identity was not made by us.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &DiskError{Dir: dir, Err: err}
	}
	if err := writeIdentity(dir, id); err != nil {
		return nil, err
	}
	d := &DB{dir: dir, loadReserve: loadReserve(opts.MemTableSize), fail: newFailure(dir)}
	cache := opts.Cache
	if cache == nil {
		d.ownCache = pebble.NewCache(opts.CacheSize)
		cache = d.ownCache
	}
	po := &pebble.Options{
		Cache:         cache,
		MemTableSize:  opts.MemTableSize,
		DisableWAL:    true,
		Logger:        logger{d.fail},
		EventListener: d.fail.listener(),
		FS:            gateFS{vfs.Default, d.fail},
	}
	po.Levels = make([]pebble.LevelOptions, 7)
	for i := range po.Levels {
		if opts.BloomBitsPerKey > 0 {
			po.Levels[i].FilterPolicy = bloom.FilterPolicy(opts.BloomBitsPerKey)
		}
	}
	po.EnsureDefaults()
	db, err := pebble.Open(dir, po)
	if err != nil {
		if d.ownCache != nil {
			d.ownCache.Unref()
		}
		switch {
		// Pebble's lock: fcntl's error if another process holds it, or
		// its own error if this process does. Not any error that says
		// "lock": the directory's path may (".../blocklist/...").
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), strings.Contains(err.Error(), "lock held by current process"):
			return nil, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
		// The disk, not the data: wiping the directory would not help.
		case d.fail.get() != nil:
			return nil, d.fail.get()
		case refused(err):
			return nil, &DiskError{Dir: dir, Err: err}
		case pebble.IsCorruptionError(err), errors.Is(err, pebble.ErrCorruption):
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, dir, err)
		default:
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, dir, err)
		}
	}
	d.db = db
	// Pebble reads its tables lazily: read the stores' offsets now, so
	// that a damaged table holding them is reported here, as ErrCorrupt
	// (which the runner answers by wiping the directory), rather than by
	// every restore of the task.
	if err := d.checkOffsets(); err != nil {
		_ = db.Close()
		if d.ownCache != nil {
			d.ownCache.Unref()
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, dir, err)
	}
	return d, nil
}

// checkOffsets reads the offset of every store.
func (d *DB) checkOffsets() error {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{metaSpace}, UpperBound: []byte{dataSpace}})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Value()) != 8 {
			err = fmt.Errorf("offset record %q has %d bytes", it.Key(), len(it.Value()))
			break
		}
	}
	return errors.Join(err, it.Error(), it.Close())
}

func checkIdentity(dir string, want Identity) error {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new directory, or a Pebble directory without identity:
		// only accept the former.
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			return fmt.Errorf("%w: %s has no %s file", ErrForeign, dir, identityFile)
		}
		return nil
	case err != nil:
		return &DiskError{Dir: dir, Err: err}
	}
	var got Identity
	if err := json.Unmarshal(b, &got); err != nil {
		return fmt.Errorf("%w: %s: identity file: %v", ErrCorrupt, dir, err)
	}
	if got != want {
		return fmt.Errorf("%w: %s was created for job %q task %s with %d partitions, not job %q task %s with %d partitions",
			ErrForeign, dir, got.Job, got.Task, got.Partitions, want.Job, want.Task, want.Partitions)
	}
	return nil
}

func writeIdentity(dir string, id Identity) error {
	path := filepath.Join(dir, identityFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b, _ := json.Marshal(id)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return &DiskError{Dir: dir, Err: fmt.Errorf("write identity: %w", err)}
	}
	if err := os.Rename(tmp, path); err != nil {
		return &DiskError{Dir: dir, Err: fmt.Errorf("write identity: %w", err)}
	}
	return nil
}

// Key layout: a store's data keys are 0x01, the store name's length (one
// byte), the name, then the user key; its offset is under 0x00 and the
// same name encoding.
const (
	metaSpace byte = 0x00
	dataSpace byte = 0x01
)

func appendPrefix(dst []byte, space byte, store string) []byte {
	dst = append(dst, space, byte(len(store)))
	return append(dst, store...)
}

func (d *DB) dataKey(store string, key []byte) []byte {
	d.scratch = append(appendPrefix(d.scratch[:0], dataSpace, store), key...)
	return d.scratch
}

// Get implements state.Backend.
func (d *DB) Get(store string, key []byte) ([]byte, error) {
	if d.closed {
		return nil, state.ErrClosed
	}
	v, closer, err := d.db.Get(d.dataKey(store, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, state.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pebblestore: get from %s: %w", store, err)
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	closer.Close()
	return out, nil
}

// Apply implements state.Backend.
func (d *DB) Apply(b *state.Batch) error {
	if d.closed {
		return state.ErrClosed
	}
	if err := d.Err(); err != nil {
		return err
	}
	pb := d.db.NewBatch()
	var k []byte
	for _, op := range b.Ops {
		k = append(appendPrefix(k[:0], dataSpace, op.Store), op.Key...)
		var err error
		if op.Value == nil {
			err = pb.Delete(k, nil)
		} else {
			err = pb.Set(k, op.Value, nil)
		}
		if err != nil {
			pb.Close()
			return fmt.Errorf("pebblestore: batch: %w", err)
		}
	}
	for store, off := range b.Offsets {
		k = appendPrefix(k[:0], metaSpace, store)
		if err := pb.Set(k, binary.BigEndian.AppendUint64(nil, uint64(off)), nil); err != nil {
			pb.Close()
			return fmt.Errorf("pebblestore: batch: %w", err)
		}
	}
	return d.apply(pb)
}

// Offset implements state.Backend.
func (d *DB) Offset(store string) (int64, error) {
	if d.closed {
		return 0, state.ErrClosed
	}
	v, closer, err := d.db.Get(appendPrefix(nil, metaSpace, store))
	if errors.Is(err, pebble.ErrNotFound) {
		return state.NoOffset, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pebblestore: offset of %s: %w", store, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: %s: offset of store %s has %d bytes", ErrCorrupt, d.dir, store, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// Wipe implements state.Backend.
func (d *DB) Wipe(store string) error {
	if d.closed {
		return state.ErrClosed
	}
	if err := d.Err(); err != nil {
		return err
	}
	lo := appendPrefix(nil, dataSpace, store)
	pb := d.db.NewBatch()
	if err := pb.DeleteRange(lo, state.PrefixEnd(lo), nil); err != nil {
		pb.Close()
		return fmt.Errorf("pebblestore: wipe %s: %w", store, err)
	}
	if err := pb.Delete(appendPrefix(nil, metaSpace, store), nil); err != nil {
		pb.Close()
		return fmt.Errorf("pebblestore: wipe %s: %w", store, err)
	}
	return d.apply(pb)
}

// Flush writes the memtables to disk, so that a crash after it loses no
// applied batch. Closing flushes too.
func (d *DB) Flush() error {
	if d.closed {
		return state.ErrClosed
	}
	return d.flush()
}

// Err returns the database's DiskError if its background work has failed
// (a flush or compaction that could not write), and nil otherwise. Apply,
// Flush and Close return it too; Err lets a caller stop before its next
// write.
func (d *DB) Err() error {
	err := d.fail.get()
	if err != nil {
		d.reported = true
	}
	return err
}

// Close implements state.Backend: it flushes and closes the database. A
// DiskError no method has returned yet is returned by Close. A database
// whose failure caught a write inside Pebble cannot be closed (Pebble
// would wait for that write forever): Close says so, and the database
// stays open, and its directory locked, until the process exits.
func (d *DB) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	if d.ownCache != nil {
		defer d.ownCache.Unref()
	}
	reported := d.reported
	var err error
	if !d.readOnly {
		// With the WAL off, only flushed data survives: flush so that a
		// clean shutdown leaves nothing to restore.
		err = d.flush()
	}
	if d.stuck() {
		return fmt.Errorf("pebblestore: close %s: left open, with a write waiting inside Pebble for a flush that cannot succeed: %w", d.dir, d.fail.err)
	}
	if reported && d.fail.get() != nil {
		err = nil // returned already
	}
	close(d.fail.closing)
	if cerr := d.db.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("pebblestore: close %s: %w", d.dir, cerr))
	}
	return err
}

// NewIter implements state.Backend.
func (d *DB) NewIter(store string, lower, upper []byte) stream.Iterator {
	if d.closed {
		return &iter{err: state.ErrClosed}
	}
	prefix := appendPrefix(nil, dataSpace, store)
	lo := append(bytes.Clone(prefix), lower...)
	var hi []byte
	if upper == nil {
		hi = state.PrefixEnd(prefix)
	} else {
		hi = append(bytes.Clone(prefix), upper...)
	}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return &iter{err: fmt.Errorf("pebblestore: iterate %s: %w", store, err)}
	}
	return &iter{it: it, skip: len(prefix)}
}

type iter struct {
	it      *pebble.Iterator
	skip    int // the prefix length to strip from keys
	started bool
	err     error
}

func (i *iter) Next() bool {
	if i.it == nil {
		return false
	}
	if !i.started {
		i.started = true
		return i.it.First()
	}
	return i.it.Next()
}

func (i *iter) Key() []byte   { return bytes.Clone(i.it.Key()[i.skip:]) }
func (i *iter) Value() []byte { return bytes.Clone(i.it.Value()) }

func (i *iter) Err() error {
	if i.err != nil || i.it == nil {
		return i.err
	}
	return i.it.Error()
}

func (i *iter) Close() error {
	if i.it == nil {
		return nil
	}
	err := i.it.Close()
	i.it = nil
	return err
}
