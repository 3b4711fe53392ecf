package serde

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// Serde converts values of type T to and from the bytes of a Kafka record
// key or value. Implementations must be safe for concurrent use and
// deterministic: the same value always encodes to the same bytes.
//
// Decode may return a value that shares memory with b (Bytes does): the
// caller hands over b and must not modify it afterwards. The runner gives
// every record bytes of its own and never reuses them. Encode returns
// bytes that the caller owns.
type Serde[T any] interface {
	Encode(v T) ([]byte, error)
	Decode(b []byte) (T, error)
}

// Funcs builds a Serde from a pair of functions.
func Funcs[T any](encode func(T) ([]byte, error), decode func([]byte) (T, error)) Serde[T] {
	return funcs[T]{encode, decode}
}

type funcs[T any] struct {
	enc func(T) ([]byte, error)
	dec func([]byte) (T, error)
}

func (f funcs[T]) Encode(v T) ([]byte, error) { return f.enc(v) }
func (f funcs[T]) Decode(b []byte) (T, error) { return f.dec(b) }

// String is the UTF-8 bytes of a string, as Kafka's StringSerializer
// writes them. A null (nil) record key or value decodes to "".
var String Serde[string] = stringSerde{}

type stringSerde struct{}

func (stringSerde) Encode(v string) ([]byte, error) { return []byte(v), nil }
func (stringSerde) Decode(b []byte) (string, error) { return string(b), nil }

// Bytes passes bytes through, copying nothing: Decode returns its input
// and Encode its value.
var Bytes Serde[[]byte] = bytesSerde{}

type bytesSerde struct{}

func (bytesSerde) Encode(v []byte) ([]byte, error) { return v, nil }
func (bytesSerde) Decode(b []byte) ([]byte, error) { return b, nil }
func (bytesSerde) DecodeAliases()                  {}

// Aliasing is implemented by serdes whose decoded values share memory with
// their input, as Bytes' do. A caller that decodes bytes it does not hand
// over (a store's cached value, say) copies them first for such a serde.
type Aliasing interface {
	DecodeAliases()
}

// Int64 is a big-endian 8-byte integer, as Kafka's LongSerializer writes
// it. Decoding anything but exactly 8 bytes is an error.
var Int64 Serde[int64] = int64Serde{}

type int64Serde struct{}

func (int64Serde) Encode(v int64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(v)), nil
}

func (int64Serde) Decode(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("serde: int64 needs 8 bytes, got %d", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// JSON encodes values with encoding/json. Decoding an empty or null input
// is an error: a tombstone is not a value of T.
func JSON[T any]() Serde[T] { return jsonSerde[T]{} }

type jsonSerde[T any] struct{}

func (jsonSerde[T]) Encode(v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("serde: json encode: %w", err)
	}
	return b, nil
}

func (jsonSerde[T]) Decode(b []byte) (T, error) {
	var v T
	if len(b) == 0 {
		return v, fmt.Errorf("serde: json decode: empty input")
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("serde: json decode: %w", err)
	}
	return v, nil
}
