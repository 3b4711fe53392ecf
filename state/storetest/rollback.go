package storetest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
)

// testRollbackModel runs records of a few writes each through the cached
// stores, failing some of them (TaskStores.RollbackRecord), and checks the
// stores, the changelog records each Flush writes, and the backend after
// each Apply against a model in which failed records never happened.
// Store "t" mirrors a topic: its writes are kept even when a record fails.
func testRollbackModel(t *testing.T, b state.Backend, cache int) {
	defer b.Close()
	log := &changelog{}
	ts := state.NewTaskStores(b, log, []stream.StoreSpec{{Name: "s"}, {Name: "t", Changelog: "topic"}}, cache)
	s, mirror := ts.Store("s"), ts.Store("t")
	model := map[string]string{}    // store s as the successful records left it
	mirrored := map[string]string{} // store t
	var changed []string            // keys of s changed since the last Flush, in first-change order
	rng := rand.New(rand.NewPCG(7, uint64(cache)))
	key := func() []byte { return []byte(fmt.Sprintf("k%02d", rng.IntN(30))) }
	check := func(i int) {
		t.Helper()
		for k := range 30 {
			key := fmt.Sprintf("k%02d", k)
			v, err := s.Get([]byte(key))
			want, ok := model[key]
			if ok != (err == nil) || ok && string(v) != want {
				t.Fatalf("record %d: Get(%s) = %q, %v; model has %q, %v", i, key, v, err, want, ok)
			}
		}
		got := collect(t, s.Range(nil, nil))
		if len(got) != len(model) {
			t.Fatalf("record %d: Range sees %d keys %v; model has %d", i, len(got), keys(got), len(model))
		}
	}
	for i := range 2000 {
		ts.BeginRecord()
		fail := rng.IntN(4) == 0
		pending := map[string]*string{} // this record's writes to s
		var firsts []string             // keys this record changed first since the Flush
		for range 1 + rng.IntN(4) {
			k := key()
			v := fmt.Sprint(i)
			op := rng.IntN(10)
			switch {
			case op < 5:
				if err := s.Put(k, []byte(v)); err != nil {
					t.Fatal(err)
				}
				pending[string(k)] = &v
			case op < 7:
				if err := s.Delete(k); err != nil {
					t.Fatal(err)
				}
				pending[string(k)] = nil
			case op < 9:
				mirror.Mirror(k, []byte(v)) // kept whatever happens
				mirrored[string(k)] = v
			default:
				_, _ = s.Get(k) // reads fill the cache, and may evict
			}
			if op < 7 && !slices.Contains(changed, string(k)) && !slices.Contains(firsts, string(k)) {
				firsts = append(firsts, string(k))
			}
		}
		if fail {
			ts.RollbackRecord()
		} else {
			ts.EndRecord()
			for k, v := range pending {
				if v == nil {
					delete(model, k)
				} else {
					model[k] = *v
				}
			}
			changed = append(changed, firsts...)
		}
		check(i)
		if rng.IntN(20) == 0 {
			log.recs = log.recs[:0]
			ts.Flush()
			var want []kv
			for _, k := range changed {
				var v []byte
				if mv, ok := model[k]; ok {
					v = []byte(mv)
				}
				want = append(want, kv{Key: "s/" + k, Value: v})
			}
			if !slices.EqualFunc(log.recs, want, func(a, b kv) bool {
				return a.Key == b.Key && bytes.Equal(a.Value, b.Value) && (a.Value == nil) == (b.Value == nil)
			}) {
				t.Fatalf("record %d: Flush wrote %v, want %v", i, log.recs, want)
			}
			changed = changed[:0]
			if rng.IntN(2) == 0 {
				if err := ts.Apply(map[string]int64{"s": int64(i), "t": int64(i)}); err != nil {
					t.Fatal(err)
				}
				check(i)
			}
		}
	}
	ts.Flush()
	if err := ts.Apply(map[string]int64{"s": 1, "t": 1}); err != nil {
		t.Fatal(err)
	}
	for store, m := range map[string]map[string]string{"s": model, "t": mirrored} {
		got := collect(t, b.NewIter(store, nil, nil))
		if len(got) != len(m) {
			t.Fatalf("backend store %s has %d keys, model %d", store, len(got), len(m))
		}
		for _, kv := range got {
			if m[kv.Key] != string(kv.Value) {
				t.Fatalf("backend %s/%s = %q, model %q", store, kv.Key, kv.Value, m[kv.Key])
			}
		}
	}
}
