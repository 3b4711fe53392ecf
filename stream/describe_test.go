package stream_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func TestSubtopologyNodes(t *testing.T) {
	job := stream.NewJob("nodes")
	in := stream.Input(job, "in", serde.String, serde.String)
	up := stream.Via(in, "upper", func(next stream.Processor[string, string]) stream.Processor[string, string] { return next },
		stream.WithStores(stream.StoreSpec{Name: "seen"}))
	stream.Output(up, "out", serde.String, serde.String)
	topo, err := job.Build()
	if err != nil {
		t.Fatal(err)
	}
	got := topo.Subtopologies()[0].Nodes()
	want := []stream.Node{
		{Name: "source-0", Kind: "source", Parents: []string{}, Reads: []string{"in"}, Writes: []string{}, Stores: []string{}},
		{Name: "upper-1", Kind: "upper", Parents: []string{"source-0"}, Reads: []string{}, Writes: []string{}, Stores: []string{"seen"}},
		{Name: "sink-2", Kind: "sink", Parents: []string{"upper-1"}, Reads: []string{}, Writes: []string{"out"}, Stores: []string{}},
	}
	for i := range got { // nil and empty slices alike
		for _, s := range []*[]string{&got[i].Parents, &got[i].Reads, &got[i].Writes, &got[i].Stores} {
			if *s == nil {
				*s = []string{}
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Nodes() =\n%+v\nwant\n%+v", got, want)
	}
}

func TestTextFormat(t *testing.T) {
	type point struct{ X, Y int }
	for _, tc := range []struct {
		name   string
		format stream.TextFormat
		text   string
		bytes  []byte
	}{
		{"string", stream.TextOf(serde.String), "héllo", []byte("héllo")},
		{"string with tab", stream.TextOf(serde.String), `"a\tb"`, []byte("a\tb")},
		{"string that looks quoted", stream.TextOf(serde.String), `"\"x\""`, []byte(`"x"`)},
		{"empty string", stream.TextOf(serde.String), "", []byte{}},
		{"bytes", stream.TextOf(serde.Bytes), `"\x00\x01"`, []byte{0, 1}},
		{"int64", stream.TextOf(serde.Int64), "-42", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xd6}},
		{"json", stream.TextOf(serde.JSON[point]()), `{"X":1,"Y":2}`, []byte(`{"X":1,"Y":2}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.format.Format(tc.bytes)
			if err != nil || got != tc.text {
				t.Errorf("Format(%q) = %q, %v; want %q", tc.bytes, got, err, tc.text)
			}
			b, err := tc.format.Parse(tc.text)
			if err != nil || !bytes.Equal(b, tc.bytes) {
				t.Errorf("Parse(%q) = %q, %v; want %q", tc.text, b, err, tc.bytes)
			}
		})
	}
	if _, err := stream.TextOf(serde.Int64).Format([]byte("abc")); err == nil {
		t.Error("Format of 3 bytes as int64: no error")
	}
	if _, err := stream.TextOf(serde.Int64).Parse("forty-two"); err == nil {
		t.Error("Parse of forty-two as int64: no error")
	}
}

func TestStoreFormat(t *testing.T) {
	job := stream.NewJob("formats")
	table := stream.TableInput(job, "users", serde.String, serde.Int64)
	stream.Output(table.ToStream(), "out", serde.String, serde.Int64)
	stream.AddTask(job, stream.TaskSpec{Name: "raw", Inputs: []string{"in"}, Stores: []stream.StoreSpec{{Name: "plain"}},
		New: func() stream.Task { return nil }})
	stream.SetStoreFormat(job, "missing", serde.String, serde.String)
	if _, err := job.Build(); err == nil {
		t.Fatal("Build: no error for the format of a store that does not exist")
	}

	job = stream.NewJob("formats")
	table = stream.TableInput(job, "users", serde.String, serde.Int64)
	stream.Output(table.ToStream(), "out", serde.String, serde.Int64)
	stream.AddTask(job, stream.TaskSpec{Name: "raw", Inputs: []string{"in"}, Stores: []stream.StoreSpec{{Name: "plain"}},
		New: func() stream.Task { return nil }})
	topo, err := job.Build()
	if err != nil {
		t.Fatal(err)
	}
	k, v, ok := topo.StoreFormat("users")
	if !ok {
		t.Fatal("StoreFormat(users): none")
	}
	if s, _ := k.Format([]byte("ann")); s != "ann" {
		t.Errorf("key format: %q", s)
	}
	if s, _ := v.Format([]byte{0, 0, 0, 0, 0, 0, 0, 7}); s != "7" {
		t.Errorf("value format: %q", s)
	}
	if _, _, ok := topo.StoreFormat("plain"); ok {
		t.Error("StoreFormat(plain): a format nobody recorded")
	}
}
