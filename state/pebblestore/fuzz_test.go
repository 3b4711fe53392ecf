package pebblestore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
)

// fuzzStores are store names that are prefixes of one another, the
// longest name allowed and names of odd bytes: the key layout must keep
// every store's keys apart from every other's and from the offsets.
var fuzzStores = []string{"a", "ab", "a.b", "b", "a-", strings.Repeat("s", 249)}

// The key layout under random writes to several stores: each store reads
// back exactly its own keys, in order, with its own offset.
func FuzzStoreLayout(f *testing.F) {
	f.Add([]byte{0, 0, 1, 'k', 1, 'v', 0, 1, 1, 'k', 1, 'w', 2, 0, 7, 3})
	f.Add([]byte{0, 5, 0, 0, 0, 2, 0xff, 0xff, 0, 1, 0, 1, 0, 3, 1, 2, 0xff, 0xff})
	f.Add(bytes.Repeat([]byte{0, 1, 2, 0, 0xff, 1, 'x'}, 8))
	db, err := pebblestore.Open(f.TempDir(), pebblestore.Identity{Job: "fuzz", Task: "0_0", Partitions: 1}, pebblestore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	f.Fuzz(func(t *testing.T, ops []byte) {
		for _, s := range fuzzStores {
			if err := db.Wipe(s); err != nil {
				t.Fatal(err)
			}
		}
		model := map[string]map[string]string{}
		offsets := map[string]int64{}
		next := func() byte {
			if len(ops) == 0 {
				return 0
			}
			b := ops[0]
			ops = ops[1:]
			return b
		}
		take := func() []byte {
			n := min(int(next()%8), len(ops))
			b := bytes.Clone(ops[:n])
			ops = ops[n:]
			return b
		}
		var batch state.Batch
		apply := func() {
			if err := db.Apply(&batch); err != nil {
				t.Fatal(err)
			}
			batch.Reset()
		}
		for len(ops) > 0 {
			op, store := next()%4, fuzzStores[int(next())%len(fuzzStores)]
			if model[store] == nil {
				model[store] = map[string]string{}
			}
			switch op {
			case 0:
				k, v := take(), take()
				batch.Put(store, k, v)
				model[store][string(k)] = string(v)
			case 1:
				k := take()
				batch.Delete(store, k)
				delete(model[store], string(k))
			case 2:
				off := int64(next())<<8 | int64(next())
				batch.SetOffset(store, off)
				offsets[store] = off
			case 3:
				apply()
			}
		}
		apply()
		for _, store := range fuzzStores {
			want := slices.Sorted(maps.Keys(model[store]))
			it := db.NewIter(store, nil, nil)
			var got []string
			for it.Next() {
				k, v := string(it.Key()), string(it.Value())
				got = append(got, k)
				if mv, ok := model[store][k]; !ok || mv != v {
					t.Errorf("store %s: iterator yields %q=%q; model has %q, %v", store, k, v, mv, ok)
				}
			}
			if err := errors.Join(it.Err(), it.Close()); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("store %.8s: keys %q, want %q", store, got, want)
			}
			for k, v := range model[store] {
				if got, err := db.Get(store, []byte(k)); err != nil || string(got) != v {
					t.Fatalf("store %.8s: Get(%q) = %q, %v; want %q", store, k, got, err, v)
				}
			}
			want64, ok := offsets[store]
			if !ok {
				want64 = state.NoOffset
			}
			if off, err := db.Offset(store); err != nil || off != want64 {
				t.Fatalf("store %.8s: Offset = %d, %v; want %d", store, off, err, want64)
			}
		}
	})
}

// Whatever the identity file holds, Open answers with a usable store (the
// file names this task), ErrForeign (it names another) or ErrCorrupt (it
// names nothing): never a panic, never another error.
func FuzzIdentityFile(f *testing.F) {
	good, _ := json.Marshal(id)
	f.Add(good)
	f.Add([]byte(`{"job":"j","task":"0_1","partitions":8}`))
	f.Add([]byte(`{"JOB":"j","Task":"0_1","partitions":4,"extra":[1,2]}`))
	f.Add([]byte(`{"job":"j","task":"0_1","partitions":4.5}`))
	f.Add([]byte(`null`))
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "SAMSA-IDENTITY"), content, 0o644); err != nil {
			t.Fatal(err)
		}
		var named pebblestore.Identity
		parseErr := json.Unmarshal(content, &named)
		db, err := pebblestore.Open(dir, id, pebblestore.Options{MemTableSize: 1 << 20})
		switch {
		case parseErr != nil:
			if !errors.Is(err, pebblestore.ErrCorrupt) {
				t.Fatalf("identity %q: Open = %v, want ErrCorrupt", content, err)
			}
		case named != id:
			if !errors.Is(err, pebblestore.ErrForeign) {
				t.Fatalf("identity %q names %+v: Open = %v, want ErrForeign", content, named, err)
			}
		case err != nil:
			t.Fatalf("identity %q names this task: Open = %v", content, err)
		default:
			db.Close()
		}
	})
}
