//go:build linux

package pebblestore_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/samsa-go/samsa/internal/testfs"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
)

// Disk trouble: a full disk, a directory made read-only. Pebble on its
// own stalls the next write forever once a flush fails, and retries the
// flush at once, forever; the DB returns a DiskError instead, keeps what
// it has on disk consistent, and closes.

// diskBatch fills batch i of a disk test: 100 keys of 1 KiB values that do
// not compress, and the store's offset i.
func diskBatch(b *state.Batch, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range 100 {
		v := make([]byte, 1024)
		for k := range v {
			v[k] = byte(rng.Uint32())
		}
		b.Put("s", fmt.Appendf(nil, "b%06d-%03d", i, j), v)
	}
	b.SetOffset("s", int64(i))
}

// diskCheckPrefix checks that the store holds exactly the batches up to
// its offset: data and offset stayed atomic.
func diskCheckPrefix(t *testing.T, db *pebblestore.DB) int {
	t.Helper()
	off, err := db.Offset("s")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for i := 1; i <= int(off); i++ {
		var b state.Batch
		diskBatch(&b, i)
		for _, op := range b.Ops {
			want[string(op.Key)] = op.Value
		}
	}
	n := 0
	it := db.NewIter("s", nil, nil)
	for it.Next() {
		n++
		if v, ok := want[string(it.Key())]; !ok || string(v) != string(it.Value()) {
			t.Fatalf("key %s: not what batches 1..%d (the store's offset) wrote", it.Key(), off)
		}
	}
	if err := errors.Join(it.Err(), it.Close()); err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Fatalf("the store holds %d keys; batches 1..%d (its offset) wrote %d", n, off, len(want))
	}
	return int(off)
}

// diskFill applies batches from first on until one fails; flush makes
// each batch wait for its memtable to reach the disk.
func diskFill(t *testing.T, db *pebblestore.DB, first int, flush bool) (next int, err error) {
	t.Helper()
	// 40 MiB of batches: ten times the tmpfs.
	for i := first; i < first+400; i++ {
		var b state.Batch
		diskBatch(&b, i)
		if err := db.Apply(&b); err != nil {
			return i, err
		}
		if flush {
			if err := db.Flush(); err != nil {
				return i + 1, err
			}
		}
	}
	t.Fatalf("40 MiB went into a 4 MiB file system without an error")
	return 0, nil
}

func checkDiskError(t *testing.T, err error, dir string, cause syscall.Errno) {
	t.Helper()
	var de *pebblestore.DiskError
	if !errors.As(err, &de) || de.Dir != dir || !errors.Is(err, cause) {
		t.Fatalf("error %q (%T): want a DiskError for %s caused by %q", err, err, dir, cause)
	}
	if !strings.Contains(err.Error(), "state directory "+dir) || !strings.Contains(err.Error(), cause.Error()) {
		t.Errorf("error %q does not name the directory %s and the cause %q", err, dir, cause)
	}
}

// diskCopy copies the store directory dir to a new directory with room,
// as what a process that died then would leave: a failed database writes
// no more files.
func diskCopy(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(dir)); err != nil {
		t.Fatalf("copy %s: %v", dir, err)
	}
	return dst
}

// A 4 MiB file system filled by batches: Apply, or the Flush after it,
// returns a DiskError; later writes return it at once; the directory
// holds the batches up to its offset and takes more once it has room.
// Without flushes the failure comes from a background flush or
// compaction, and the next Apply returns it rather than stalling behind
// memtables Pebble cannot flush.
func TestDiskFull(t *testing.T) {
	for _, flush := range []bool{true, false} {
		t.Run(fmt.Sprintf("flush=%v", flush), func(t *testing.T) {
			mnt := filepath.Join(t.TempDir(), "small")
			testfs.Tmpfs(t, mnt, "4m")
			dir := filepath.Join(mnt, "db")
			opts := pebblestore.Options{MemTableSize: 1 << 20, CacheSize: 1 << 20}
			db, err := pebblestore.Open(dir, id, opts)
			if err != nil {
				t.Fatal(err)
			}
			next, err := diskFill(t, db, 1, flush)
			checkDiskError(t, err, dir, syscall.ENOSPC)
			t.Logf("batch %d failed: %v", next-1, err)

			var b state.Batch
			diskBatch(&b, next)
			if err := db.Apply(&b); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Apply after the failure: %v, want the failure", err)
			}
			if err := db.Wipe("s"); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Wipe after the failure: %v, want the failure", err)
			}
			if err := db.Err(); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Err after the failure: %v, want the failure", err)
			}
			// The failure was returned already: Close adds nothing,
			// unless a write is stuck inside Pebble (see Close).
			if err := db.Close(); err != nil && !strings.Contains(err.Error(), "left open") {
				t.Errorf("Close: %v", err)
			}

			db, err = pebblestore.Open(diskCopy(t, dir), id, opts)
			if err != nil {
				t.Fatalf("open a copy with room: %v", err)
			}
			off := diskCheckPrefix(t, db)
			t.Logf("the directory holds batches 1..%d", off)
			for i := off + 1; i < next+5; i++ {
				var b state.Batch
				diskBatch(&b, i)
				if err := db.Apply(&b); err != nil {
					t.Fatalf("batch %d with room: %v", i, err)
				}
			}
			if got := diskCheckPrefix(t, db); got != next+4 {
				t.Errorf("the store's offset is %d, want %d", got, next+4)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A directory made read-only, removed, or replaced by a file under an
// open database: data waits in the memtable, so the failure shows at the
// next flush, here Close's, which returns it and closes the database.
func TestDiskUnwritable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause syscall.Errno
		// reopens: Open makes a new directory in its place.
		reopens bool
		spoil   func(t *testing.T, dir string) (mend func())
	}{
		{"read-only", syscall.EROFS, false, func(t *testing.T, dir string) func() {
			return testfs.ReadOnlyOver(t, dir)
		}},
		{"removed", syscall.ENOENT, true, func(t *testing.T, dir string) func() {
			hidden := dir + ".hidden"
			if err := os.Rename(dir, hidden); err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := errors.Join(os.RemoveAll(dir), os.Rename(hidden, dir)); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"replaced by a file", syscall.ENOTDIR, false, func(t *testing.T, dir string) func() {
			hidden := dir + ".hidden"
			if err := os.Rename(dir, hidden); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := errors.Join(os.Remove(dir), os.Rename(hidden, dir)); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "db")
			opts := pebblestore.Options{MemTableSize: 1 << 20, CacheSize: 1 << 20}
			db, err := pebblestore.Open(dir, id, opts)
			if err != nil {
				t.Fatal(err)
			}
			var b state.Batch
			diskBatch(&b, 1)
			if err := db.Apply(&b); err != nil {
				t.Fatal(err)
			}
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
			mend := tc.spoil(t, dir)
			b.Reset()
			diskBatch(&b, 2)
			if err := db.Apply(&b); err != nil {
				t.Fatalf("Apply into the memtable: %v", err)
			}
			checkDiskError(t, db.Close(), dir, tc.cause)

			switch db, err := pebblestore.Open(dir, id, opts); {
			case tc.reopens && err == nil:
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
			case err == nil:
				t.Fatalf("Open of the %s directory succeeded", tc.name)
			default:
				var de *pebblestore.DiskError
				if !errors.As(err, &de) {
					t.Fatalf("Open of the %s directory: %v: want a DiskError (the disk's trouble, not the data's)", tc.name, err)
				}
			}

			mend()
			db, err = pebblestore.Open(dir, id, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := diskCheckPrefix(t, db); got != 1 {
				t.Errorf("the store's offset is %d, want 1: the batch flushed before the trouble", got)
			}
		})
	}
}
