package serde_test

import (
	"bytes"
	"math"
	"testing"

	"github.com/samsa-go/samsa/stream/serde"
)

func TestInt64MatchesKafkaLongSerializer(t *testing.T) {
	for _, tc := range []struct {
		v    int64
		want []byte
	}{
		{0, []byte{0, 0, 0, 0, 0, 0, 0, 0}},
		{1, []byte{0, 0, 0, 0, 0, 0, 0, 1}},
		{-1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{math.MaxInt64, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	} {
		b, _ := serde.Int64.Encode(tc.v)
		if !bytes.Equal(b, tc.want) {
			t.Errorf("Encode(%d) = %x, want %x", tc.v, b, tc.want)
		}
		if v, err := serde.Int64.Decode(b); err != nil || v != tc.v {
			t.Errorf("Decode(%x) = %d, %v", b, v, err)
		}
	}
	if _, err := serde.Int64.Decode([]byte{1, 2, 3}); err == nil {
		t.Error("Decode of 3 bytes succeeded")
	}
}

func TestBytesPassesThrough(t *testing.T) {
	in := []byte("abc")
	if out, _ := serde.Bytes.Decode(in); &out[0] != &in[0] {
		t.Errorf("Decode copied its input")
	}
	if _, ok := serde.Bytes.(serde.Aliasing); !ok {
		t.Errorf("Bytes does not declare that its values alias their input")
	}
	if out, _ := serde.Bytes.Decode(nil); out != nil {
		t.Errorf("Decode(nil) = %q, want nil (a Kafka null stays null)", out)
	}
}

func TestJSON(t *testing.T) {
	type view struct {
		User string         `json:"user"`
		Tags map[string]int `json:"tags"`
	}
	s := serde.JSON[view]()
	v := view{User: "ann", Tags: map[string]int{"b": 2, "a": 1}}
	b, err := s.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"user":"ann","tags":{"a":1,"b":2}}` {
		t.Errorf("Encode = %s (map keys must be sorted for determinism)", b)
	}
	got, err := s.Decode(b)
	if err != nil || got.User != "ann" || got.Tags["b"] != 2 {
		t.Errorf("Decode = %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {}, []byte("{"), []byte(`{"user":1}`)} {
		if _, err := s.Decode(bad); err == nil {
			t.Errorf("Decode(%q) succeeded", bad)
		}
	}
}

// Round trips must hold for any input the decoders accept.
func FuzzInt64(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := serde.Int64.Decode(b)
		if err != nil {
			return
		}
		out, _ := serde.Int64.Encode(v)
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip %x -> %d -> %x", b, v, out)
		}
	})
}

func FuzzJSON(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":"x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := serde.JSON[map[string]any]()
		v, err := s.Decode(b)
		if err != nil {
			return
		}
		enc, err := s.Encode(v)
		if err != nil {
			t.Fatalf("re-encode of %q: %v", b, err)
		}
		again, err := s.Decode(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %q: %v", enc, err)
		}
		if enc2, _ := s.Encode(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %s vs %s", enc, enc2)
		}
	})
}

func FuzzString(f *testing.F) {
	f.Add([]byte("hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, _ := serde.String.Decode(b)
		out, _ := serde.String.Encode(v)
		if !bytes.Equal(out, b) && len(b) > 0 {
			t.Fatalf("round trip %q -> %q", b, out)
		}
	})
}
