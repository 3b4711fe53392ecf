package window_test

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/memstore"
	"github.com/samsa-go/samsa/state/window"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func FuzzTimeOrder(f *testing.F) {
	f.Add(int64(0), int64(1))
	f.Add(int64(-1), int64(0))
	f.Add(int64(math.MinInt64), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, a, b int64) {
		ea, eb := window.AppendTime(nil, a), window.AppendTime(nil, b)
		if got := window.Time(ea); got != a {
			t.Fatalf("Time(AppendTime(%d)) = %d", a, got)
		}
		if c := bytes.Compare(ea, eb); c != cmpInt(a, b) {
			t.Fatalf("bytes order of %d and %d is %d", a, b, c)
		}
	})
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func FuzzKeys(f *testing.F) {
	f.Add([]byte("k"), int64(5), int64(9))
	f.Add([]byte{}, int64(-3), int64(-3))
	f.Fuzz(func(t *testing.T, key []byte, start, end int64) {
		k, s, e, err := window.SplitKeyIndexKey(window.KeyIndexKey(nil, key, start, end))
		if err != nil || !bytes.Equal(k, key) || s != start || e != end {
			t.Fatalf("by-key round trip of (%x, %d, %d): (%x, %d, %d, %v)", key, start, end, k, s, e, err)
		}
		k, s, e, err = window.SplitEndIndexKey(window.EndIndexKey(nil, key, start, end))
		if err != nil || !bytes.Equal(k, key) || s != start || e != end {
			t.Fatalf("by-end round trip of (%x, %d, %d): (%x, %d, %d, %v)", key, start, end, k, s, e, err)
		}
		s, k, err = window.SplitFixedKey(window.FixedKey(nil, start, key))
		if err != nil || !bytes.Equal(k, key) || s != start {
			t.Fatalf("fixed round trip of (%d, %x): (%d, %x, %v)", start, key, s, k, err)
		}
		// Keys that are prefixes of others never mix in the by-key index.
		longer := append(bytes.Clone(key), 0)
		if bytes.HasPrefix(window.KeyIndexKey(nil, longer, start, end), window.KeyIndexPrefix(nil, key)) {
			t.Fatalf("the windows of %x fall among those of %x", longer, key)
		}
	})
}

func TestSplitRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {0x01}, {0x01, 0x05, 'a'}, {0x02, 1, 2}, window.EndIndexKey(nil, []byte("k"), 1, 2)} {
		if _, _, _, err := window.SplitKeyIndexKey(b); err == nil {
			t.Errorf("SplitKeyIndexKey(%x) accepted", b)
		}
	}
	for _, b := range [][]byte{nil, {0x02, 1, 2}, window.KeyIndexKey(nil, []byte("k"), 1, 2)} {
		if _, _, _, err := window.SplitEndIndexKey(b); err == nil {
			t.Errorf("SplitEndIndexKey(%x) accepted", b)
		}
	}
	if _, _, err := window.SplitFixedKey([]byte{1, 2, 3}); err == nil {
		t.Error("SplitFixedKey of 3 bytes accepted")
	}
}

type nopLog struct{}

func (nopLog) Write(string, []byte, []byte) {}

func newStore(t *testing.T) stream.Store {
	t.Helper()
	ts := state.NewTaskStores(memstore.New(), nopLog{}, []stream.StoreSpec{{Name: "w"}}, 1<<20)
	return ts.Store("w")
}

func TestFixed(t *testing.T) {
	f := window.NewFixed(newStore(t), 10, serde.String, serde.Int64)
	for _, w := range []struct {
		k     string
		start int64
		v     int64
	}{{"b", 20, 1}, {"a", 20, 2}, {"a", 0, 3}, {"a", -10, 4}, {"c", 10, 5}} {
		if err := f.Put(w.k, w.start, w.v); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, err := f.Get("a", 20); err != nil || !ok || v != 2 {
		t.Errorf("Get(a, 20) = %d, %t, %v", v, ok, err)
	}
	if _, ok, _ := f.Get("a", 10); ok {
		t.Error("Get(a, 10) found a window never put")
	}
	if err := f.Delete("c", 10); err != nil {
		t.Fatal(err)
	}
	got := collect(t, f.Starting(-10, 21))
	want := "a[-10,0)=4 a[0,10)=3 a[20,30)=2 b[20,30)=1"
	if got != want {
		t.Errorf("Starting(-10, 21):\n got %s\nwant %s", got, want)
	}
	if got := collect(t, f.Starting(0, 20)); got != "a[0,10)=3" {
		t.Errorf("Starting(0, 20) = %s", got)
	}
}

func TestIndexed(t *testing.T) {
	x := window.NewIndexed(newStore(t), serde.String, serde.Int64)
	for _, w := range []struct {
		k          string
		start, end int64
		v          int64
	}{{"a", 0, 5, 1}, {"a", 20, 30, 2}, {"b", 3, 4, 3}, {"ab", 1, 2, 4}, {"a", 40, 40, 5}} {
		if err := x.Put(w.k, w.start, w.end, w.v); err != nil {
			t.Fatal(err)
		}
	}
	if got := collect(t, x.Fetch("a", 5)); got != "a[0,5)=1 a[20,30)=2 a[40,40)=5" {
		t.Errorf("Fetch(a, 5) = %s", got)
	}
	if got := collect(t, x.Fetch("a", 6)); got != "a[20,30)=2 a[40,40)=5" {
		t.Errorf("Fetch(a, 6) = %s", got)
	}
	if got := collect(t, x.Ending(0, 31)); got != "ab[1,2)=4 b[3,4)=3 a[0,5)=1 a[20,30)=2" {
		t.Errorf("Ending(0, 31) = %s", got)
	}
	if err := x.Delete("a", 20, 30); err != nil {
		t.Fatal(err)
	}
	if err := x.Put("a", 0, 5, 9); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, x.Ending(math.MinInt64, math.MaxInt64)); got != "ab[1,2)=4 b[3,4)=3 a[0,5)=9 a[40,40)=5" {
		t.Errorf("after delete and update: %s", got)
	}
	if v, ok, err := x.Get("a", 40, 40); err != nil || !ok || v != 5 {
		t.Errorf("Get(a, 40, 40) = %d, %t, %v", v, ok, err)
	}
}

func collect[K, V any](t *testing.T, it *window.Iter[K, V]) string {
	t.Helper()
	defer it.Close()
	var out []string
	for it.Next() {
		out = append(out, fmt.Sprintf("%v[%d,%d)=%v", it.Key(), it.Start(), it.End(), it.Value()))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(slices.Clip(out), " ")
}
