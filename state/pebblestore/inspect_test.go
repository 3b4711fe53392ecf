package pebblestore_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
)

// A store directory opens read-only with its identity, while no process
// has it open; its stores read as written and have a size.
func TestOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	id := pebblestore.Identity{Job: "j", Task: "0_1", Partitions: 4}
	db, err := pebblestore.Open(dir, id, pebblestore.Options{MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var b state.Batch
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		v := make([]byte, 100)
		for j := range v {
			v[j] = byte(rng.Uint32()) // incompressible
		}
		b.Put("s", fmt.Appendf(nil, "key-%04d", i), v)
	}
	b.SetOffset("s", 1000)
	if err := db.Apply(&b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pebblestore.OpenReadOnly(dir); !errors.Is(err, pebblestore.ErrLocked) {
		t.Errorf("OpenReadOnly of an open directory: %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	ro, got, err := pebblestore.OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got != id {
		t.Errorf("identity %+v, want %+v", got, id)
	}
	if v, err := ro.Get("s", []byte("key-0999")); err != nil || len(v) != 100 {
		t.Errorf("Get: %d bytes, %v", len(v), err)
	}
	if off, err := ro.Offset("s"); err != nil || off != 1000 {
		t.Errorf("Offset: %d, %v", off, err)
	}
	if n, err := ro.ApproxBytes("s"); err != nil || n < 50_000 {
		t.Errorf("ApproxBytes: %d, %v; want about 100 KB", n, err)
	}
	if n, err := ro.ApproxBytes("other"); err != nil || n > 1000 {
		t.Errorf("ApproxBytes of an empty store: %d, %v", n, err)
	}

	if _, _, err := pebblestore.OpenReadOnly(t.TempDir()); !errors.Is(err, pebblestore.ErrForeign) {
		t.Errorf("OpenReadOnly of an empty directory: %v, want ErrForeign", err)
	}
}
