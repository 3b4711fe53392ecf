package main

import (
	"fmt"
	"slices"
	"testing"

	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream/serde"
)

// TestSample runs the demo's clicks through the job in-process: the
// counts are those the package documentation explains.
func TestSample(t *testing.T) {
	d, err := runnertest.New(Job(), runnertest.Partitions("clicks", 4), runnertest.Partitions("page-clicks-per-minute", 4))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in := runnertest.NewInput(d, "clicks", serde.String, serde.JSON[Click]())
	for _, kv := range Sample() {
		if err := in.Pipe(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runnertest.NewOutput(d, "page-clicks-per-minute", serde.String, serde.JSON[PageCount]()).Records()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range out {
		pc := r.Value
		if r.Key != pc.Page || pc.End.Sub(pc.Start).Minutes() != 1 {
			t.Errorf("record %+v: key or window wrong", r)
		}
		got = append(got, fmt.Sprintf("%s %s %d", pc.Page, pc.Start.Format("15:04"), pc.Clicks))
	}
	slices.Sort(got)
	want := []string{
		"/docs 12:00 2", "/docs 12:01 1", "/docs 12:02 1",
		"/home 12:00 3", "/home 12:01 3", "/home 12:02 1",
		"/pricing 12:00 2", "/pricing 12:01 1", "/pricing 12:02 1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("counts:\n got %q\nwant %q", got, want)
	}
	if late := d.Dropped()["late"]; late != 1 {
		t.Errorf("%d late clicks dropped, want 1", late)
	}
}
