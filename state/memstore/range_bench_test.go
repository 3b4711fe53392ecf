package memstore_test

import (
	"encoding/binary"
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/memstore"
	"github.com/samsa-go/samsa/stream"
)

type nopLog struct{}

func (nopLog) Write(string, []byte, []byte) {}

// BenchmarkRangeBetweenCommits is the access pattern of a windowed join:
// each operation scans a narrow key range (about the last ten entries of
// one of 1,000 keys), then writes a new key, and a commit (Flush, Apply)
// comes every 100,000 operations, so scans run while up to that many keys
// wait in the cache. A scan must cost what its range holds, not what the
// cache holds: ns/op stays flat as b.N grows.
func BenchmarkRangeBetweenCommits(b *testing.B) {
	ts := state.NewTaskStores(memstore.New(), nopLog{}, []stream.StoreSpec{{Name: "s"}}, 64<<20)
	s := ts.Store("s")
	key := func(k, i uint64) []byte {
		return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, k), i)
	}
	b.ResetTimer()
	for i := range uint64(b.N) {
		k := i % 1000
		it := s.Range(key(k, max(i, 10_000)-10_000), key(k, i))
		for it.Next() {
		}
		it.Close()
		if err := s.Put(key(k, i), []byte("v")); err != nil {
			b.Fatal(err)
		}
		if i%100_000 == 99_999 {
			ts.Flush()
			if err := ts.Apply(nil); err != nil {
				b.Fatal(err)
			}
		}
	}
}
