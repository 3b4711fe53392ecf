package pebblestore_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
	"github.com/samsa-go/samsa/state/storetest"
)

var id = pebblestore.Identity{Job: "j", Task: "0_1", Partitions: 4}

func open(t *testing.T, dir string, id pebblestore.Identity) *pebblestore.DB {
	t.Helper()
	db, err := pebblestore.Open(dir, id, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestConformance(t *testing.T) {
	storetest.TestBackend(t, func(t *testing.T) state.Backend { return open(t, t.TempDir(), id) })
}

func TestReopenKeepsDataAndOffsets(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, id)
	var b state.Batch
	b.Put("s", []byte("k"), []byte("v"))
	b.SetOffset("s", 100)
	if err := db.Apply(&b); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, id)
	defer db.Close()
	if v, err := db.Get("s", []byte("k")); err != nil || string(v) != "v" {
		t.Errorf("Get = %q, %v", v, err)
	}
	if off, _ := db.Offset("s"); off != 100 {
		t.Errorf("Offset = %d", off)
	}
}

func TestOpenRefusesForeignLockedAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, id)
	if _, err := pebblestore.Open(dir, id, pebblestore.Options{}); !errors.Is(err, pebblestore.ErrLocked) {
		t.Errorf("second Open of an open directory: %v, want ErrLocked", err)
	}
	db.Close()

	for _, other := range []pebblestore.Identity{
		{Job: "other", Task: id.Task, Partitions: id.Partitions},
		{Job: id.Job, Task: "0_2", Partitions: id.Partitions},
		{Job: id.Job, Task: id.Task, Partitions: 8},
	} {
		if _, err := pebblestore.Open(dir, other, pebblestore.Options{}); !errors.Is(err, pebblestore.ErrForeign) {
			t.Errorf("Open as %+v: %v, want ErrForeign", other, err)
		}
	}

	// Corrupt every Pebble file.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "SAMSA-IDENTITY" && !e.IsDir() {
			os.WriteFile(filepath.Join(dir, e.Name()), []byte("garbage"), 0o644)
		}
	}
	if _, err := pebblestore.Open(dir, id, pebblestore.Options{}); !errors.Is(err, pebblestore.ErrCorrupt) {
		t.Errorf("Open of a corrupt directory: %v, want ErrCorrupt", err)
	}
}
