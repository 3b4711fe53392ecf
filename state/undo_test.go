package state

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/samsa-go/samsa/stream"
)

// A rollback restores the cache's byte counts and flush order exactly, so
// that eviction and early commits behave as if the record never ran.
// (Results are checked by the conformance suite, storetest.)
func TestRollbackKeepsAccounting(t *testing.T) {
	for _, cache := range []int{0, 600, 1 << 20} {
		t.Run(fmt.Sprint("cache=", cache), func(t *testing.T) {
			ts := NewTaskStores(newMapBackend(), nopLog{}, []stream.StoreSpec{{Name: "a"}, {Name: "b"}}, cache)
			rng := rand.New(rand.NewPCG(3, uint64(cache)))
			for i := range 3000 {
				ts.BeginRecord()
				before := snapshot(ts)
				for range 1 + rng.IntN(5) {
					s := ts.order[rng.IntN(2)]
					k := []byte(fmt.Sprintf("k%02d", rng.IntN(20)))
					switch rng.IntN(3) {
					case 0:
						_ = s.Put(k, []byte(fmt.Sprint(i, "-", rng.IntN(1000))))
					case 1:
						_ = s.Delete(k)
					default:
						_, _ = s.Get(k)
					}
				}
				if rng.IntN(3) == 0 {
					ts.RollbackRecord()
					after := snapshot(ts)
					// Reads may have cached or evicted clean entries: compare
					// what matters, the changes and their order.
					if !slices.Equal(before.dirty, after.dirty) || before.dirtyB != after.dirtyB {
						t.Fatalf("record %d: rollback left dirty %v (%d bytes), want %v (%d bytes)",
							i, after.dirty, after.dirtyB, before.dirty, before.dirtyB)
					}
				} else {
					ts.EndRecord()
				}
				checkAccounting(t, ts, i)
				if rng.IntN(25) == 0 {
					ts.Flush()
					if err := ts.Apply(map[string]int64{"a": int64(i), "b": int64(i)}); err != nil {
						t.Fatal(err)
					}
					checkAccounting(t, ts, i)
				}
			}
		})
	}
}

type cacheState struct {
	dirty  []string // store/key in flush order
	dirtyB int
}

func snapshot(ts *TaskStores) cacheState {
	var c cacheState
	for _, s := range ts.order {
		for _, k := range s.dirty {
			e := s.cache[k]
			c.dirty = append(c.dirty, fmt.Sprintf("%s/%s=%q", s.name, k, e.value))
		}
	}
	c.dirtyB = ts.dirtyB
	return c
}

func checkAccounting(t *testing.T, ts *TaskStores, i int) {
	t.Helper()
	var bytes, dirtyB int
	for _, s := range ts.order {
		n := 0
		for k, e := range s.cache {
			bytes += e.size(k)
			if e.dirty {
				dirtyB += e.size(k)
				n++
				if !slices.Contains(s.dirty, k) {
					t.Fatalf("record %d: %s/%s is dirty but not in the flush order", i, s.name, k)
				}
			}
		}
		if n != len(s.dirty) {
			t.Fatalf("record %d: store %s has %d dirty entries, %d in the flush order", i, s.name, n, len(s.dirty))
		}
	}
	if bytes != ts.bytes || dirtyB != ts.dirtyB {
		t.Fatalf("record %d: counted %d bytes (%d dirty), entries add up to %d (%d dirty)", i, ts.bytes, ts.dirtyB, bytes, dirtyB)
	}
}

type nopLog struct{}

func (nopLog) Write(string, []byte, []byte) {}

// mapBackend is the least Backend the cache needs: gets and batches.
type mapBackend struct{ m map[string]string }

func newMapBackend() *mapBackend { return &mapBackend{m: map[string]string{}} }

func (b *mapBackend) Get(store string, key []byte) ([]byte, error) {
	v, ok := b.m[store+"/"+string(key)]
	if !ok {
		return nil, ErrNotFound
	}
	return []byte(v), nil
}

func (b *mapBackend) Apply(batch *Batch) error {
	for _, op := range batch.Ops {
		if op.Value == nil {
			delete(b.m, op.Store+"/"+string(op.Key))
		} else {
			b.m[op.Store+"/"+string(op.Key)] = string(op.Value)
		}
	}
	return nil
}

func (b *mapBackend) NewIter(string, []byte, []byte) stream.Iterator { panic("not used") }
func (b *mapBackend) Offset(string) (int64, error)                   { return NoOffset, nil }
func (b *mapBackend) Wipe(string) error                              { return nil }
func (b *mapBackend) Close() error                                   { return nil }
