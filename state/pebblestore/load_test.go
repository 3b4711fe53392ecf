package pebblestore

import (
	"fmt"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/storetest"
)

func TestLoadConformance(t *testing.T) {
	storetest.TestLoad(t, func(t *testing.T) state.Backend {
		db, err := Open(t.TempDir(), Identity{Job: "j", Task: "0_0", Partitions: 1}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

// A restore's batches are small next to the memtable, so the memtables
// fill up before Pebble flushes them: 150k small records (about 10 MB in
// memtables) go into Pebble's first memtables (256 KB, doubling up to
// 8 MB of the 16 MB default) without a flush. Batches of 16k records, as
// the restore used before, reserve 3.5 MB each, leave every memtable
// partly empty, and had Pebble flush during such a restore.
func TestLoadFillsMemtables(t *testing.T) {
	db, err := Open(t.TempDir(), Identity{Job: "j", Task: "0_0", Partitions: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := db.NewLoad("counts")
	defer l.Close()
	value := make([]byte, 8)
	const n = 150_000
	for i := range n {
		l.Put(fmt.Appendf(nil, "key-%d", i), value)
		if l.Full() {
			if err := l.Commit(int64(i + 1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Commit(n); err != nil {
		t.Fatal(err)
	}
	m := db.db.Metrics()
	if m.Flush.Count > 0 || m.Flush.NumInProgress > 0 {
		t.Errorf("Pebble flushed during the load: %d flushes done, %d in progress, %d memtables of %d bytes",
			m.Flush.Count, m.Flush.NumInProgress, m.MemTable.Count, m.MemTable.Size)
	}
	if off, err := db.Offset("counts"); err != nil || off != n {
		t.Errorf("Offset = %d, %v; want %d", off, err, n)
	}
}

func TestLoadOfClosedDB(t *testing.T) {
	db, err := Open(t.TempDir(), Identity{Job: "j", Task: "0_0", Partitions: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := db.NewLoad("s")
	l.Put([]byte("k"), []byte("v"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(1); err != state.ErrClosed {
		t.Errorf("Commit after the DB closed: %v, want state.ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
