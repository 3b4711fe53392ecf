package stream

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/samsa-go/samsa/stream/serde"
)

// Node describes one node of a job's graph, for tools that show the job
// (the job binary's describe command draws it). It is a copy.
type Node struct {
	// Name is unique within the job: the node's kind and a number, such
	// as "aggregate-4", or a low-level task's own name.
	Name string
	// Kind is what the node does: "source", "map", "aggregate", "sink", ...
	Kind string
	// Parents are the names of the nodes whose records it receives.
	Parents []string
	// Reads and Writes are the topics it reads and writes, Stores the
	// stores it uses, each sorted.
	Reads, Writes, Stores []string
}

// Nodes returns the sub-topology's nodes in the order they were added to
// the job, so a parent comes before its children.
func (s *Subtopology) Nodes() []Node {
	out := make([]Node, len(s.nodes))
	for i, n := range s.nodes {
		parents := make([]string, len(n.parents))
		for j, p := range n.parents {
			parents[j] = p.name
		}
		out[i] = Node{
			Name: n.name, Kind: n.kind, Parents: parents,
			Reads:  slices.Sorted(slices.Values(n.inputs)),
			Writes: slices.Sorted(slices.Values(n.outputs)),
			Stores: slices.Sorted(slices.Values(n.stores)),
		}
	}
	return out
}

// TextFormat turns the bytes of a store's keys or values into text and
// back, for tools that show a store (the job binary's state command).
// Implementations are safe for concurrent use.
type TextFormat interface {
	// Format returns b as text: decoded with the store's serde, then
	// written as the value itself for strings and as JSON otherwise.
	Format(b []byte) (string, error)
	// Parse returns the bytes of the value s writes, the reverse of
	// Format: a string as is, anything else as JSON.
	Parse(s string) ([]byte, error)
}

// TextOf returns the TextFormat of values encoded with s.
func TextOf[T any](s serde.Serde[T]) TextFormat { return textFormat[T]{s} }

type textFormat[T any] struct{ s serde.Serde[T] }

func (f textFormat[T]) Format(b []byte) (string, error) {
	v, err := f.s.Decode(b)
	if err != nil {
		return "", err
	}
	switch v := any(v).(type) {
	case string:
		return QuoteIfNeeded([]byte(v)), nil
	case []byte:
		return QuoteIfNeeded(v), nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v), nil
	}
	return string(j), nil
}

func (f textFormat[T]) Parse(s string) ([]byte, error) {
	var v T
	switch p := any(&v).(type) {
	case *string:
		*p = UnquoteIfQuoted(s)
	case *[]byte:
		*p = []byte(UnquoteIfQuoted(s))
	default:
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("%q is not a JSON %T: %w", s, v, err)
		}
	}
	return f.s.Encode(v)
}

// QuoteIfNeeded returns b as text: as is if it is printable UTF-8 with no
// tab or newline and does not begin with a double quote, otherwise as a
// double-quoted Go string literal. [UnquoteIfQuoted] reverses it.
func QuoteIfNeeded(b []byte) string {
	plain := utf8.Valid(b) && (len(b) == 0 || b[0] != '"')
	for s := string(b); plain && s != ""; {
		r, n := utf8.DecodeRuneInString(s)
		plain = unicode.IsPrint(r)
		s = s[n:]
	}
	if plain {
		return string(b)
	}
	return strconv.Quote(string(b))
}

// UnquoteIfQuoted returns s unquoted if it is a double-quoted Go string
// literal, as [QuoteIfNeeded] writes bytes that are not plain text, and
// s itself otherwise.
func UnquoteIfQuoted(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	return s
}

// SetStoreFormat records how the keys and values of a declared store
// read as text: as those of the given serdes. Tables (package operators,
// [TableInput]) record theirs; a low-level [Task] can record the serdes
// it stores with. Tools show the bytes of a store with no format, quoted
// where they are not plain text.
func SetStoreFormat[K, V any](j *Job, store string, key serde.Serde[K], value serde.Serde[V]) {
	if key == nil || value == nil || !j.checkOpen("format of store "+store) {
		return
	}
	d, ok := j.stores[store]
	if !ok {
		j.errorf("stream: format of store %q: no such store", store)
		return
	}
	d.format = [2]TextFormat{TextOf(key), TextOf(value)}
}

// StoreFormat returns the text formats of store's keys and values, if the
// job recorded them (see [SetStoreFormat]).
func (t *Topology) StoreFormat(store string) (key, value TextFormat, ok bool) {
	d, ok := t.job.stores[store]
	if !ok || d.format[0] == nil {
		return nil, nil, false
	}
	return d.format[0], d.format[1], true
}
