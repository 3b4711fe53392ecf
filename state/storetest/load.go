package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/samsa-go/samsa/state"
)

// TestLoad checks a backend's restore path, state.NewLoad: its own Load
// if it is a state.Loader, the Batch one otherwise.
func TestLoad(t *testing.T, open func(t *testing.T) state.Backend) {
	t.Run("commit", func(t *testing.T) { testLoadCommit(t, open(t)) })
	t.Run("full", func(t *testing.T) { testLoadFull(t, open(t)) })
}

// testLoadCommit: committed writes land with their offset, in order (a
// later write of a key wins, a delete removes it), other stores keep
// theirs, and writes not committed when the load is closed are dropped.
func testLoadCommit(t *testing.T, b state.Backend) {
	defer b.Close()
	var batch state.Batch
	batch.Put("s", []byte("old"), []byte("gone after the delete"))
	batch.Put("other", []byte("a"), []byte("x"))
	batch.SetOffset("other", 5)
	if err := b.Apply(&batch); err != nil {
		t.Fatal(err)
	}

	l := state.NewLoad(b, "s")
	l.Put([]byte("a"), []byte("1"))
	l.Put([]byte("b"), nil) // an empty value, not a delete
	l.Put([]byte("a"), []byte("2"))
	l.Delete([]byte("old"))
	l.Delete([]byte("never there"))
	if err := l.Commit(10); err != nil {
		t.Fatal(err)
	}
	mustGet(t, b, "s", "a", "2")
	mustGet(t, b, "s", "b", "")
	if _, err := b.Get("s", []byte("old")); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get of a deleted key: %v, want ErrNotFound", err)
	}
	if off, _ := b.Offset("s"); off != 10 {
		t.Errorf("Offset after Commit(10) = %d", off)
	}
	mustGet(t, b, "other", "a", "x")
	if off, _ := b.Offset("other"); off != 5 {
		t.Errorf("Offset of the other store = %d, want 5", off)
	}

	// A commit with no writes moves the offset (records compacted away,
	// transaction markers).
	if err := l.Commit(12); err != nil {
		t.Fatal(err)
	}
	if off, _ := b.Offset("s"); off != 12 {
		t.Errorf("Offset after an empty Commit(12) = %d", off)
	}

	l.Put([]byte("c"), []byte("not committed"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get("s", []byte("c")); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get of a write closed before its commit: %v, want ErrNotFound", err)
	}
	if off, _ := b.Offset("s"); off != 12 {
		t.Errorf("Offset after Close = %d, want 12", off)
	}
	got := collect(t, b.NewIter("s", nil, nil))
	if want := []string{"a", "b"}; fmt.Sprint(keys(got)) != fmt.Sprint(want) {
		t.Errorf("keys after the load = %v, want %v", keys(got), want)
	}
}

// testLoadFull: a load reports itself full after a bounded number of
// writes, and what it holds then commits.
func testLoadFull(t *testing.T, b state.Backend) {
	defer b.Close()
	l := state.NewLoad(b, "s")
	defer l.Close()
	const most = 1 << 20
	n := 0
	for ; n < most && !l.Full(); n++ {
		l.Put([]byte(fmt.Sprintf("key-%07d", n)), []byte("value"))
	}
	if n == most {
		t.Fatalf("the load is not full after %d writes", most)
	}
	if err := l.Commit(int64(n)); err != nil {
		t.Fatal(err)
	}
	if l.Full() {
		t.Error("the load is still full after its Commit")
	}
	mustGet(t, b, "s", "key-0000000", "value")
	mustGet(t, b, "s", fmt.Sprintf("key-%07d", n-1), "value")
	if off, _ := b.Offset("s"); off != int64(n) {
		t.Errorf("Offset = %d, want %d", off, n)
	}
}
