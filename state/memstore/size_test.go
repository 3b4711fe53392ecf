package memstore_test

import (
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/memstore"
)

func TestApproxBytes(t *testing.T) {
	b := memstore.New()
	var batch state.Batch
	batch.Put("a", []byte("k1"), []byte("value"))   // 7
	batch.Put("a", []byte("k2"), []byte("v"))       // 3
	batch.Put("b", []byte("key"), []byte("123456")) // 9
	if err := b.Apply(&batch); err != nil {
		t.Fatal(err)
	}
	batch.Reset()
	batch.Put("a", []byte("k1"), []byte("vv")) // replaces 7 with 4
	batch.Delete("a", []byte("k2"))            // removes 3
	batch.Delete("a", []byte("missing"))
	if err := b.Apply(&batch); err != nil {
		t.Fatal(err)
	}
	for store, want := range map[string]int64{"a": 4, "b": 9, "none": 0} {
		if got, err := b.ApproxBytes(store); err != nil || got != want {
			t.Errorf("ApproxBytes(%s) = %d, %v; want %d", store, got, err, want)
		}
	}
	if err := b.Wipe("b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.ApproxBytes("b"); got != 0 {
		t.Errorf("ApproxBytes after Wipe = %d", got)
	}
}
