package runnertest_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
)

// dedupe is a low-level Task with a store: it passes on the first record
// of each key and drops the rest.
type dedupe struct{ seen stream.Store }

func (d *dedupe) Init(ctx stream.Context) (err error) {
	d.seen, err = ctx.Store("seen")
	return err
}

func (d *dedupe) Process(ctx stream.Context, rec stream.RawRecord) error {
	_, err := d.seen.Get(rec.Key)
	switch {
	case err == nil:
		return nil // a duplicate
	case !errors.Is(err, stream.ErrNotFound):
		return err
	}
	if err := d.seen.Put(rec.Key, nil); err != nil {
		return err
	}
	return ctx.Emit("unique", rec)
}

func TestTaskWithStore(t *testing.T) {
	job := stream.NewJob("dedupe")
	stream.AddTask(job, stream.TaskSpec{
		Name: "dedupe", Inputs: []string{"events"}, Outputs: []string{"unique"},
		Stores: []stream.StoreSpec{{Name: "seen"}},
		New:    func() stream.Task { return new(dedupe) },
	})
	d, err := runnertest.New(job, runnertest.Partitions("events", 2), runnertest.Partitions("unique", 2))
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range []string{"a", "b", "a", "c", "b", "a"} {
		rec := stream.RawRecord{Key: []byte(k), Value: []byte(fmt.Sprint(i))}
		rec.Partition = d.PartitionFor("events", rec.Key)
		if err := d.Pipe("events", rec); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	for _, r := range d.AllRecords("unique") {
		got[string(r.Key)] += string(r.Value)
	}
	if fmt.Sprint(got) != "map[a:0 b:1 c:3]" {
		t.Errorf("unique: %v", got)
	}
	// Every first sighting went to the store's changelog.
	if n := len(d.AllRecords("dedupe-seen-changelog")); n != 3 {
		t.Errorf("changelog has %d records, want 3", n)
	}
}
