package pebblestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// DiskError is a failure of the disk under a store directory: a write
// Pebble could not make (no space left, a directory made read-only or
// removed, an I/O error). After it the database takes no more writes:
// each later write, Flush and Close return it. What it last wrote is
// consistent (each store's data with its offset), so the stores are
// restored from their changelogs, from there, once the directory is
// usable again.
type DiskError struct {
	Dir string // the store directory
	Err error  // what failed
}

func (e *DiskError) Error() string {
	return fmt.Sprintf("pebblestore: state directory %s: %v", e.Dir, e.Err)
}

func (e *DiskError) Unwrap() error { return e.Err }

// refused reports whether err is the disk refusing a write, rather than
// Pebble finding bad data (a missing file is damage: the runner wipes the
// directory for it).
func refused(err error) bool {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EACCES, syscall.EPERM, syscall.EIO, syscall.ENOTDIR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// isFileError reports whether err is the file system failing a file
// operation.
func isFileError(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &le) || errors.As(err, &errno)
}

// failure is the first failure of a database's background work (a flush
// or a compaction that could not write its table, or a manifest update
// Pebble would exit the process over), kept for the database's next
// write to return.
//
// Pebble retries a failed flush at once and forever, and stalls writes
// once the memtables waiting for it are full: without this a full disk
// would hang the task in its next write and spin a core.
type failure struct {
	dir     string
	once    sync.Once
	err     error         // set before ch is closed
	ch      chan struct{} // closed on the first failure
	closing chan struct{} // closed when the database is being closed

	stalls  atomic.Int32  // write stalls in progress
	stalled chan struct{} // signalled when a write stall begins
}

func newFailure(dir string) *failure {
	return &failure{dir: dir, ch: make(chan struct{}), closing: make(chan struct{}), stalled: make(chan struct{}, 1)}
}

func (f *failure) set(op string, err error) {
	f.once.Do(func() {
		f.err = &DiskError{Dir: f.dir, Err: fmt.Errorf("%s: %w", op, err)}
		close(f.ch)
	})
}

// get returns the failure, or nil.
func (f *failure) get() error {
	select {
	case <-f.ch:
		return f.err
	default:
		return nil
	}
}

// listener records the database's background errors.
func (f *failure) listener() *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			// A compaction that a concurrent operation cancelled is
			// retried; it says nothing of the disk.
			if !errors.Is(err, pebble.ErrCancelledCompaction) {
				f.set("background write failed", err)
			}
		},
		WriteStallBegin: func(pebble.WriteStallBeginInfo) {
			f.stalls.Add(1)
			select {
			case f.stalled <- struct{}{}:
			default:
			}
		},
		WriteStallEnd: func() { f.stalls.Add(-1) },
	}
}

// logger is the database's Pebble logger: errors go to stderr, and
// Fatalf, which Pebble calls when it cannot update its manifest (no space
// left for it, say), records a failure rather than exiting the process if
// the cause is the disk. Pebble returns the error after such a Fatalf;
// the database takes no writes after it, and the next Open reads the
// manifest as it was before the failed update, or reports it corrupt (the
// runner then wipes the directory and restores it).
type logger struct{ f *failure }

func (logger) Infof(string, ...any) {}

func (l logger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: %s: %s\n", l.f.dir, fmt.Sprintf(format, args...))
}

func (l logger) Fatalf(format string, args ...any) {
	for _, a := range args {
		if err, ok := a.(error); ok && isFileError(err) {
			l.f.set("update manifest", err)
			return
		}
	}
	fmt.Fprintf(os.Stderr, "pebble: %s: %s\n", l.f.dir, fmt.Sprintf(format, args...))
	os.Exit(1)
}

// gateFS is the database's file system. Once the database has failed, a
// new file waits until the database is closed, and then fails: Pebble
// retries a failed flush or compaction at once, and would spin a core
// until then (forever, if a write left inside Pebble keeps the database
// open).
type gateFS struct {
	vfs.FS
	f *failure
}

func (g gateFS) Create(name string) (vfs.File, error) {
	if err := g.f.get(); err != nil {
		<-g.f.closing
		return nil, err
	}
	return g.FS.Create(name)
}

// wait runs fn, a call into Pebble that blocks while writes are stalled,
// until it returns or the database fails. A call left behind in Pebble
// keeps running; Close then leaves the database open rather than wait for
// it forever (Pebble's Close would).
func (d *DB) wait(fn func() error) error {
	if err := d.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if ferr := d.Err(); ferr != nil {
			return ferr
		}
		return err
	case <-d.fail.ch:
		d.inside = done
		return d.Err()
	}
}

// apply applies b without syncing, and closes it: a batch still in a
// call left behind in Pebble is closed when the call returns.
func (d *DB) apply(b *pebble.Batch) error {
	if err := d.Err(); err != nil {
		b.Close()
		return err
	}
	err := d.wait(func() error {
		defer b.Close()
		return d.db.Apply(b, pebble.NoSync)
	})
	var de *DiskError
	if err != nil && !errors.As(err, &de) {
		err = fmt.Errorf("pebblestore: apply to %s: %w", d.dir, err)
	}
	return err
}

// flush writes the memtables to disk and waits until they are written or
// the database fails.
func (d *DB) flush() error {
	var flushed <-chan struct{}
	err := d.wait(func() (err error) {
		flushed, err = d.db.AsyncFlush()
		return err
	})
	if err != nil {
		return err
	}
	select {
	case <-flushed:
		return d.Err()
	case <-d.fail.ch:
		return d.Err()
	}
}

// stuck reports whether a call that wait left inside Pebble when the
// database failed will never return: it waits in a write stall, which
// only a flush or compaction could end. Otherwise it waits for the call.
func (d *DB) stuck() bool {
	if d.inside == nil {
		return false
	}
	for {
		select {
		case err := <-d.inside:
			d.inside <- err
			return false
		default:
		}
		if d.fail.stalls.Load() > 0 {
			return true
		}
		select {
		case err := <-d.inside:
			d.inside <- err
			return false
		case <-d.fail.stalled:
		}
	}
}
