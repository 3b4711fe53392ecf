// Package storetest is the conformance suite for state backends: every
// state.Backend runs the same checks, directly and behind the task-store
// cache. A new backend passes if TestBackend does:
//
//	func TestConformance(t *testing.T) {
//		storetest.TestBackend(t, func(t *testing.T) state.Backend { return open(t) })
//	}
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
)

// TestBackend runs the conformance suite against fresh backends from open.
func TestBackend(t *testing.T, open func(t *testing.T) state.Backend) {
	t.Run("batch", func(t *testing.T) { testBatch(t, open(t)) })
	t.Run("iterate", func(t *testing.T) { testIterate(t, open(t)) })
	t.Run("wipe", func(t *testing.T) { testWipe(t, open(t)) })
	t.Run("cached-store", func(t *testing.T) { testCachedStore(t, open(t)) })
	t.Run("cached-store-model", func(t *testing.T) {
		for _, cache := range []int{0, 1 << 10, 1 << 20} {
			t.Run(fmt.Sprint("cache=", cache), func(t *testing.T) { testModel(t, open(t), cache) })
		}
	})
	t.Run("record-rollback-model", func(t *testing.T) {
		for _, cache := range []int{0, 1 << 10, 1 << 20} {
			t.Run(fmt.Sprint("cache=", cache), func(t *testing.T) { testRollbackModel(t, open(t), cache) })
		}
	})
}

func testBatch(t *testing.T, b state.Backend) {
	defer b.Close()
	if off, err := b.Offset("s"); err != nil || off != state.NoOffset {
		t.Fatalf("Offset of a new store = %d, %v", off, err)
	}
	var batch state.Batch
	batch.Put("s", []byte("a"), []byte("1"))
	batch.Put("s", []byte("b"), nil) // an empty value, not a delete
	batch.Put("other", []byte("a"), []byte("x"))
	batch.SetOffset("s", 42)
	if err := b.Apply(&batch); err != nil {
		t.Fatal(err)
	}
	mustGet(t, b, "s", "a", "1")
	mustGet(t, b, "s", "b", "")
	mustGet(t, b, "other", "a", "x")
	if _, err := b.Get("s", []byte("zz")); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get of a missing key: %v, want ErrNotFound", err)
	}
	if off, _ := b.Offset("s"); off != 42 {
		t.Errorf("Offset = %d, want 42", off)
	}
	if off, _ := b.Offset("other"); off != state.NoOffset {
		t.Errorf("Offset of other = %d, want none", off)
	}

	v, _ := b.Get("s", []byte("a"))
	v[0] = 'X' // the caller owns what Get returns
	mustGet(t, b, "s", "a", "1")

	batch.Reset()
	batch.Delete("s", []byte("a"))
	batch.SetOffset("s", 43)
	if err := b.Apply(&batch); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get("s", []byte("a")); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get after delete: %v", err)
	}
	if off, _ := b.Offset("s"); off != 43 {
		t.Errorf("Offset = %d, want 43", off)
	}
}

func testIterate(t *testing.T, b state.Backend) {
	defer b.Close()
	var batch state.Batch
	for _, k := range []string{"a", "ab", "abc", "b", "ba", "c"} {
		batch.Put("s", []byte(k), []byte("v"+k))
	}
	batch.Put("s2", []byte("ab"), []byte("other store"))
	if err := b.Apply(&batch); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lo, hi []byte
		want   []string
	}{
		{nil, nil, []string{"a", "ab", "abc", "b", "ba", "c"}},
		{[]byte("ab"), []byte("b"), []string{"ab", "abc"}},
		{[]byte("b"), nil, []string{"b", "ba", "c"}},
		{nil, []byte("ab"), []string{"a"}},
		{[]byte("x"), nil, nil},
	} {
		got := collect(t, b.NewIter("s", tc.lo, tc.hi))
		if !slices.Equal(keys(got), tc.want) {
			t.Errorf("[%q, %q): got %v, want %v", tc.lo, tc.hi, keys(got), tc.want)
		}
		for _, kv := range got {
			if string(kv.Value) != "v"+kv.Key {
				t.Errorf("value of %q = %q", kv.Key, kv.Value)
			}
		}
	}
}

func testWipe(t *testing.T, b state.Backend) {
	defer b.Close()
	var batch state.Batch
	batch.Put("s", []byte("a"), []byte("1"))
	batch.Put("t", []byte("a"), []byte("2"))
	batch.SetOffset("s", 7)
	batch.SetOffset("t", 8)
	if err := b.Apply(&batch); err != nil {
		t.Fatal(err)
	}
	if err := b.Wipe("s"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get("s", []byte("a")); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get after wipe: %v", err)
	}
	if off, _ := b.Offset("s"); off != state.NoOffset {
		t.Errorf("Offset after wipe = %d", off)
	}
	mustGet(t, b, "t", "a", "2")
	if off, _ := b.Offset("t"); off != 8 {
		t.Errorf("Offset of the other store = %d", off)
	}
}

// changelog records what the stores write to their changelogs.
type changelog struct{ recs []kv }

func (c *changelog) Write(store string, key, value []byte) {
	c.recs = append(c.recs, kv{Key: store + "/" + string(key), Value: value})
}

func testCachedStore(t *testing.T, b state.Backend) {
	defer b.Close()
	log := &changelog{}
	ts := state.NewTaskStores(b, log, []stream.StoreSpec{{Name: "s"}}, 1<<20)
	s := ts.Store("s")
	for i := range 3 {
		if err := s.Put([]byte("k"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put([]byte("gone"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete([]byte("gone")); err != nil {
		t.Fatal(err)
	}
	// Reads see writes before any commit; the backend does not.
	if v, err := s.Get([]byte("k")); err != nil || string(v) != "2" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if _, err := b.Get("s", []byte("k")); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("the backend has an uncommitted write: %v", err)
	}

	// One changelog record per key per flush, in first-write order.
	ts.Flush()
	want := []kv{{Key: "s/k", Value: []byte("2")}, {Key: "s/gone", Value: nil}}
	if len(log.recs) != 2 || log.recs[0].Key != want[0].Key || string(log.recs[0].Value) != "2" || log.recs[1].Key != "s/gone" || log.recs[1].Value != nil {
		t.Fatalf("changelog = %v, want %v", log.recs, want)
	}
	// Flushed but not applied: still visible through the store only.
	if _, err := b.Get("s", []byte("k")); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("the backend has a flushed, unapplied write: %v", err)
	}
	if err := s.Put([]byte("k"), []byte("3")); err != nil { // must not disturb the staged "2"
		t.Fatal(err)
	}
	if err := ts.Apply(map[string]int64{"s": 2}); err != nil {
		t.Fatal(err)
	}
	mustGet(t, b, "s", "k", "2")
	if off, _ := b.Offset("s"); off != 2 {
		t.Errorf("Offset = %d, want 2", off)
	}
	if v, _ := s.Get([]byte("k")); string(v) != "3" {
		t.Errorf("Get = %q, want the newer unflushed 3", v)
	}

	ro := state.NewTaskStores(b, log, []stream.StoreSpec{{Name: "t", Changelog: "topic"}}, 0).Store("t")
	if err := ro.Put([]byte("k"), []byte("v")); !errors.Is(err, state.ErrReadOnly) {
		t.Errorf("Put to a read-only store: %v", err)
	}
}

// testModel runs random operations against the cached store and a map,
// with random flushes and applies, and checks they agree: point reads,
// scans, and the backend after a final apply.
func testModel(t *testing.T, b state.Backend, cache int) {
	defer b.Close()
	ts := state.NewTaskStores(b, &changelog{}, []stream.StoreSpec{{Name: "s"}}, cache)
	s := ts.Store("s")
	model := map[string]string{}
	rng := rand.New(rand.NewPCG(1, uint64(cache)))
	key := func() []byte { return []byte(fmt.Sprintf("k%02d", rng.IntN(40))) }
	for i := range 3000 {
		switch op := rng.IntN(100); {
		case op < 45:
			k, v := key(), []byte(fmt.Sprint(i))
			if err := s.Put(k, v); err != nil {
				t.Fatal(err)
			}
			model[string(k)] = string(v)
		case op < 60:
			k := key()
			if err := s.Delete(k); err != nil {
				t.Fatal(err)
			}
			delete(model, string(k))
		case op < 85:
			k := key()
			v, err := s.Get(k)
			want, ok := model[string(k)]
			if ok != (err == nil) || (ok && string(v) != want) {
				t.Fatalf("op %d: Get(%s) = %q, %v; model has %q, %v", i, k, v, err, want, ok)
			}
		case op < 92:
			lo, hi := key(), key()
			if bytes.Compare(lo, hi) > 0 {
				lo, hi = hi, lo
			}
			got := collect(t, s.Range(lo, hi))
			var want []kv
			for k, v := range model {
				if k >= string(lo) && k < string(hi) {
					want = append(want, kv{Key: k, Value: []byte(v)})
				}
			}
			slices.SortFunc(want, func(a, b kv) int { return bytes.Compare([]byte(a.Key), []byte(b.Key)) })
			if !equalKVs(got, want) {
				t.Fatalf("op %d: Range(%s, %s) = %v, want %v", i, lo, hi, got, want)
			}
		case op < 97:
			ts.Flush()
		default:
			ts.Flush()
			if err := ts.Apply(map[string]int64{"s": int64(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ts.Flush()
	if err := ts.Apply(map[string]int64{"s": 1}); err != nil {
		t.Fatal(err)
	}
	got := collect(t, b.NewIter("s", nil, nil))
	if len(got) != len(model) {
		t.Fatalf("backend has %d keys, model %d", len(got), len(model))
	}
	for _, kv := range got {
		if model[kv.Key] != string(kv.Value) {
			t.Fatalf("backend %s = %q, model %q", kv.Key, kv.Value, model[kv.Key])
		}
	}
}

type kv = stream.KeyValue[string, []byte]

func collect(t *testing.T, it stream.Iterator) []kv {
	t.Helper()
	defer it.Close()
	var out []kv
	for it.Next() {
		out = append(out, kv{Key: string(it.Key()), Value: it.Value()})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func keys(kvs []kv) []string {
	var out []string
	for _, kv := range kvs {
		out = append(out, kv.Key)
	}
	return out
}

func equalKVs(a, b []kv) bool {
	return slices.EqualFunc(a, b, func(x, y kv) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
}

func mustGet(t *testing.T, b state.Backend, store, key, want string) {
	t.Helper()
	v, err := b.Get(store, []byte(key))
	if err != nil || string(v) != want {
		t.Errorf("Get(%s, %s) = %q, %v; want %q", store, key, v, err, want)
	}
}
