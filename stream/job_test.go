package stream_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func TestBuildReportsEveryMistake(t *testing.T) {
	job := stream.NewJob("bad job name")
	stream.Input(job, "in", serde.String, serde.String)
	stream.Input(job, "in", serde.String, serde.String)
	stream.Input(job, "no/slash", serde.String, serde.String)
	stream.AddTask(job, stream.TaskSpec{Name: "t", Inputs: []string{"x"}})
	_, err := job.Build()
	if err == nil {
		t.Fatal("Build succeeded")
	}
	for _, want := range []string{`"bad job name"`, `topic "in" is read twice`, `"no/slash"`, `task "t": nil New`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	if !errors.Is(err, stream.ErrInvalidName) {
		t.Errorf("error does not wrap ErrInvalidName")
	}
}

func TestBuildNeedsInputs(t *testing.T) {
	if _, err := stream.NewJob("empty").Build(); err == nil || !strings.Contains(err.Error(), "no inputs") {
		t.Fatalf("got %v", err)
	}
}

func TestAddingAfterBuildIsAnError(t *testing.T) {
	job := stream.NewJob("j")
	stream.Input(job, "a", serde.String, serde.String)
	if _, err := job.Build(); err != nil {
		t.Fatal(err)
	}
	stream.Input(job, "b", serde.String, serde.String)
	if _, err := job.Build(); err == nil || !strings.Contains(err.Error(), "after the job was built") {
		t.Fatalf("got %v", err)
	}
}

func TestSubtopologiesAreConnectedParts(t *testing.T) {
	job := stream.NewJob("j")
	a := stream.Input(job, "a", serde.String, serde.String)
	b := stream.Input(job, "b", serde.String, serde.String)
	c := stream.Input(job, "c", serde.String, serde.String)
	stream.Output(operators.Merge(a, operators.MapValues(c, strings.ToUpper)), "ac-out", serde.String, serde.String)
	stream.Output(b, "b-out", serde.String, serde.String)
	stream.AddTask(job, stream.TaskSpec{Name: "low", Inputs: []string{"d", "e"}, Outputs: []string{"de-out"}, New: func() stream.Task { return nil }})

	topo, err := job.Build()
	if err != nil {
		t.Fatal(err)
	}
	type sub struct{ in, out []string }
	var got []sub
	for _, s := range topo.Subtopologies() {
		got = append(got, sub{s.Inputs, s.Outputs})
	}
	want := []sub{
		{[]string{"a", "c"}, []string{"ac-out"}},
		{[]string{"b"}, []string{"b-out"}},
		{[]string{"d", "e"}, []string{"de-out"}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sub-topologies: %v", len(got), got)
	}
	for i := range want {
		if !slices.Equal(got[i].in, want[i].in) || !slices.Equal(got[i].out, want[i].out) {
			t.Errorf("sub-topology %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if !slices.Equal(topo.Inputs(), []string{"a", "b", "c", "d", "e"}) {
		t.Errorf("inputs %v", topo.Inputs())
	}
	if s, ok := topo.SubtopologyOf("e"); !ok || s.ID != 2 {
		t.Errorf("SubtopologyOf(e) = %v, %v", s, ok)
	}
	// A Task constructor returning nil is caught when the task is built.
	if _, err := topo.NewInstance(2); err == nil {
		t.Error("NewInstance accepted a nil Task")
	}
	if !strings.Contains(topo.String(), "sub-topology 0: inputs a, c; outputs ac-out") {
		t.Errorf("describe:\n%s", topo)
	}
}
