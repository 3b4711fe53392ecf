package serde_test

import (
	"bytes"
	"testing"

	"github.com/samsa-go/samsa/stream/serde"
)

// Bytes hands the bytes through as they are, a Kafka null (nil) included.
func FuzzBytes(f *testing.F) {
	f.Add([]byte("abc"), false)
	f.Add([]byte{}, false)
	f.Add([]byte(nil), true)
	f.Fuzz(func(t *testing.T, b []byte, null bool) {
		if null {
			b = nil
		}
		v, err := serde.Bytes.Decode(b)
		if err != nil {
			t.Fatalf("Decode(%q): %v", b, err)
		}
		out, err := serde.Bytes.Encode(v)
		if err != nil || !bytes.Equal(out, b) || (out == nil) != (b == nil) {
			t.Fatalf("round trip %q (nil %v) -> %q (nil %v), %v", b, b == nil, out, out == nil, err)
		}
	})
}

// A struct through JSON: what decodes encodes to bytes that decode to the
// same value, and encodes again the same: encoding is deterministic.
func FuzzJSONStruct(f *testing.F) {
	type view struct {
		User  string            `json:"user"`
		Page  string            `json:"page"`
		N     int64             `json:"n"`
		Tags  map[string]string `json:"tags"`
		Ratio float64           `json:"ratio"`
	}
	f.Add([]byte(`{"user":"ann","page":"/","n":3,"tags":{"b":"2","a":"1"},"ratio":0.5}`))
	f.Add([]byte(`{"user":"\u00e9","n":-9007199254740993}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"n":1e400}`))
	s := serde.JSON[view]()
	f.Fuzz(func(t *testing.T, b []byte) {
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
