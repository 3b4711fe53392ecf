package operators_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Aggregations drop records with a null key or a null value, as Kafka
// Streams does, and count the drops.
func TestAggregationsDropNulls(t *testing.T) {
	job := stream.NewJob("nulls")
	in := stream.Input(job, "in", serde.Bytes, serde.Bytes)
	g := operators.GroupByKey(in, serde.Bytes, serde.Bytes)
	stream.Output(operators.Count(g, "counts").ToStream(), "counts", serde.Bytes, serde.Int64)
	stream.Output(operators.Reduce(g, "concat", func(a, b []byte) []byte { return append(append([]byte{}, a...), b...) }).ToStream(),
		"concat", serde.Bytes, serde.Bytes)
	d, err := runnertest.New(job)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []stream.RawRecord{
		{Key: []byte("a"), Value: []byte("1")},
		{Key: nil, Value: []byte("2")},        // a null key belongs to no key
		{Key: []byte("a"), Value: nil},        // a stream's tombstone deletes nothing
		{Key: []byte(""), Value: []byte("3")}, // empty is not null
		{Key: []byte("a"), Value: []byte("")}, // nor here
		{Key: []byte("a"), Value: []byte("4")},
	} {
		if err := d.Pipe("in", r); err != nil {
			t.Fatal(err)
		}
	}
	counts, err := runnertest.NewOutput(d, "counts", serde.String, serde.Int64).KeyValues()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(counts) != "[{a 1} { 1} {a 2} {a 3}]" {
		t.Errorf("counts %v", counts)
	}
	concat, _ := runnertest.NewOutput(d, "concat", serde.String, serde.String).KeyValues()
	if fmt.Sprint(concat) != "[{a 1} { 3} {a 1} {a 14}]" {
		t.Errorf("reduced %v", concat)
	}
	// Each of the two aggregations dropped each null.
	if got := d.Dropped(); got["null key"] != 2 || got["null value"] != 2 || len(got) != 2 {
		t.Errorf("drops %v, want 2 null keys and 2 null values (one each per aggregation)", got)
	}
}

// serde.String reads a null as "": with string keys, a null key is the
// empty key. This is the documented price of a key type without null.
func TestStringKeysCannotBeNull(t *testing.T) {
	job := stream.NewJob("strings")
	in := stream.Input(job, "in", serde.String, serde.String)
	stream.Output(operators.Count(operators.GroupByKey(in, serde.String, serde.String), "counts").ToStream(), "counts", serde.String, serde.Int64)
	d, _ := runnertest.New(job)
	if err := d.Pipe("in", stream.RawRecord{Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	counts, _ := runnertest.NewOutput(d, "counts", serde.String, serde.Int64).KeyValues()
	if fmt.Sprint(counts) != "[{ 1}]" || len(d.Dropped()) != 0 {
		t.Errorf("counts %v, drops %v", counts, d.Dropped())
	}
}

// A table read from a topic: a tombstone deletes its key, a record with a
// null key is dropped, and a record that does not decode is still
// mirrored into the store (which holds the topic as a restore from it
// would), while its change goes to the deserialize policy.
func TestTableInputBadRecords(t *testing.T) {
	job := stream.NewJob("tables")
	users := stream.TableInput(job, "users", serde.String, serde.Int64)
	stream.Output(users.Changes(), "changes", serde.String, serde.Funcs(
		func(c stream.Change[int64]) ([]byte, error) {
			if c.Deleted {
				return []byte("deleted"), nil
			}
			return []byte(fmt.Sprint(c.Value)), nil
		},
		func([]byte) (stream.Change[int64], error) { return stream.Change[int64]{}, errors.New("unused") }))
	d, err := runnertest.New(job, runnertest.OnDeserializeError(stream.PolicySkip))
	if err != nil {
		t.Fatal(err)
	}
	eight := func(n int64) []byte { b, _ := serde.Int64.Encode(n); return b }
	for _, r := range []stream.RawRecord{
		{Key: []byte("ann"), Value: eight(1)},
		{Key: []byte("bob"), Value: eight(2)},
		{Key: nil, Value: eight(3)},              // dropped
		{Key: []byte("ann"), Value: nil},         // deletes ann
		{Key: []byte("bob"), Value: []byte("x")}, // does not decode
	} {
		if err := d.Pipe("users", r); err != nil {
			t.Fatal(err)
		}
	}
	changes, _ := runnertest.NewOutput(d, "changes", serde.String, serde.String).KeyValues()
	if fmt.Sprint(changes) != "[{ann 1} {bob 2} {ann deleted}]" {
		t.Errorf("changes %v", changes)
	}
	if got := d.Dropped(); got["null key"] != 1 {
		t.Errorf("drops %v, want one null key", got)
	}
	if bad := d.BadRecords(); len(bad) != 1 || bad[0].Kind != stream.KindDeserialize || bad[0].Record.Offset != 4 {
		t.Errorf("bad records %v, want users@4", bad)
	}
	store := d.Store("users", 0)
	if _, err := store.Get([]byte("ann")); !errors.Is(err, stream.ErrNotFound) {
		t.Errorf("ann after its tombstone: %v", err)
	}
	if v, err := store.Get([]byte("bob")); err != nil || string(v) != "x" {
		t.Errorf("bob = %q, %v; want the topic's bytes, x", v, err)
	}
	if _, err := store.Get([]byte("")); !errors.Is(err, stream.ErrNotFound) {
		t.Errorf("the null-keyed record reached the store: %v", err)
	}
}
