package state

import (
	"errors"
	"fmt"
	"testing"

	"github.com/samsa-go/samsa/stream"
)

// Records of writes, some rolled back, interleaved with commits, as a
// fuzzer picks them: the stores read as if the rolled-back records never
// ran, and the cache's accounting adds up after every record.
func FuzzRecordRollback(f *testing.F) {
	f.Add([]byte{0x10, 0x01, 0x22, 0x80, 0x31, 0x02, 0xc0, 0x11, 0x90})
	f.Add([]byte{0x00, 0x00, 0x00, 0xff, 0xff, 0x7f})
	f.Add([]byte("put a key, delete it, roll back, commit, put again"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		for _, cache := range []int{0, 400} {
			log := &recordingLog{}
			ts := NewTaskStores(newMapBackend(), log, []stream.StoreSpec{{Name: "a"}, {Name: "b"}}, cache)
			model := map[string]string{} // "store/key" -> value, committed records only
			var pending map[string]*string
			i := 0
			begin := func() {
				ts.BeginRecord()
				pending = map[string]*string{}
			}
			begin()
			for _, op := range ops {
				s := ts.order[op>>7&1]
				key := []byte{'k', '0' + op&7}
				name := s.name + "/" + string(key)
				switch op >> 3 & 0xf {
				case 0, 1, 2, 3, 4:
					v := fmt.Sprint(i)
					if err := s.Put(key, []byte(v)); err != nil {
						t.Fatal(err)
					}
					pending[name] = &v
				case 5, 6:
					if err := s.Delete(key); err != nil {
						t.Fatal(err)
					}
					pending[name] = nil
				case 7, 8, 9:
					_, _ = s.Get(key)
				case 10, 11, 12: // the record ends well
					ts.EndRecord()
					for k, v := range pending {
						if v == nil {
							delete(model, k)
						} else {
							model[k] = *v
						}
					}
					check(t, ts, model, i)
					begin()
				case 13, 14: // the record fails
					ts.RollbackRecord()
					check(t, ts, model, i)
					begin()
				case 15: // a commit, between records
					ts.EndRecord()
					for k, v := range pending {
						if v == nil {
							delete(model, k)
						} else {
							model[k] = *v
						}
					}
					ts.Flush()
					if err := ts.Apply(map[string]int64{"a": int64(i), "b": int64(i)}); err != nil {
						t.Fatal(err)
					}
					check(t, ts, model, i)
					begin()
				}
				i++
			}
			ts.RollbackRecord()
			check(t, ts, model, i)
		}
	})
}

func check(t *testing.T, ts *TaskStores, model map[string]string, i int) {
	t.Helper()
	checkAccounting(t, ts, i)
	for _, s := range ts.order {
		for k := range 8 {
			key := []byte{'k', '0' + byte(k)}
			v, err := s.Get(key)
			want, ok := model[s.name+"/"+string(key)]
			if ok != (err == nil) || ok && string(v) != want || !ok && !errors.Is(err, ErrNotFound) {
				t.Fatalf("op %d: %s/%s = %q, %v; want %q, %v", i, s.name, key, v, err, want, ok)
			}
		}
	}
}

type recordingLog struct{ n int }

func (l *recordingLog) Write(string, []byte, []byte) { l.n++ }
