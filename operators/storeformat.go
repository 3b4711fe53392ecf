package operators

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/samsa-go/samsa/state/window"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// The window stores' entries as tools (the job binary's state command)
// show them: JSON of the types below, read from and written to the
// stores' layouts by the serdes recorded with stream.SetStoreFormat.

// windowEntry is a key of a fixed-size window store.
type windowEntry[K any] struct {
	Key   K         `json:"key"`
	Start time.Time `json:"start"`
}

// windowValue is a value of a fixed-size window store.
type windowValue[A any] struct {
	Aggregate A         `json:"aggregate"`
	Latest    time.Time `json:"latest"` // of the window's records
}

// sessionEntry is a key of a session store: an entry of its index by key
// or of its index by end (see package state/window).
type sessionEntry[K any] struct {
	Index string    `json:"index"` // "by key" or "by end"
	Key   K         `json:"key"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// sessionValue is a value of a session store: the aggregate, in the index
// by key; nothing in the index by end.
type sessionValue[A any] struct {
	Aggregate *A `json:"aggregate,omitempty"`
}

// dedupeEntry is a key of a dedupe store: an ID remembered, or its entry
// in the index by time.
type dedupeEntry[ID any] struct {
	Index string    `json:"index"` // "id" or "expiry"
	ID    ID        `json:"id"`
	Seen  time.Time `json:"seen,omitzero"` // in the expiry index
}

// dedupeValue is a value of a dedupe store: when an ID was seen, for an
// entry of the ID index.
type dedupeValue struct {
	Seen *time.Time `json:"seen,omitempty"`
}

func encodeFailed(what string, err error) error {
	return fmt.Errorf("operators: encode %s: %w", what, err)
}

func windowStoreFormat[K, A any](j *stream.Job, store string, key serde.Serde[K], agg serde.Serde[A]) {
	keys := serde.Funcs(func(e windowEntry[K]) ([]byte, error) {
		kb, err := key.Encode(e.Key)
		if err != nil {
			return nil, encodeFailed("key", err)
		}
		return window.FixedKey(nil, e.Start.UnixMilli(), kb), nil
	}, func(b []byte) (windowEntry[K], error) {
		start, kb, err := window.SplitFixedKey(b)
		if err != nil {
			return windowEntry[K]{}, err
		}
		k, err := key.Decode(kb)
		return windowEntry[K]{Key: k, Start: time.UnixMilli(start).UTC()}, err
	})
	values := serde.Funcs(func(v windowValue[A]) ([]byte, error) {
		ab, err := agg.Encode(v.Aggregate)
		if err != nil {
			return nil, encodeFailed("aggregate", err)
		}
		return append(binary.BigEndian.AppendUint64(nil, uint64(v.Latest.UnixMilli())), ab...), nil
	}, func(b []byte) (windowValue[A], error) {
		if len(b) < 8 {
			return windowValue[A]{}, window.ErrCorrupt
		}
		a, err := agg.Decode(b[8:])
		return windowValue[A]{Aggregate: a, Latest: time.UnixMilli(int64(binary.BigEndian.Uint64(b))).UTC()}, err
	})
	stream.SetStoreFormat(j, store, keys, values)
}

func sessionStoreFormat[K, A any](j *stream.Job, store string, key serde.Serde[K], agg serde.Serde[A]) {
	keys := serde.Funcs(func(e sessionEntry[K]) ([]byte, error) {
		kb, err := key.Encode(e.Key)
		if err != nil {
			return nil, encodeFailed("key", err)
		}
		switch e.Index {
		case "by key":
			return window.KeyIndexKey(nil, kb, e.Start.UnixMilli(), e.End.UnixMilli()), nil
		case "by end":
			return window.EndIndexKey(nil, kb, e.Start.UnixMilli(), e.End.UnixMilli()), nil
		}
		return nil, fmt.Errorf(`operators: session store index %q: want "by key" or "by end"`, e.Index)
	}, func(b []byte) (sessionEntry[K], error) {
		e := sessionEntry[K]{Index: "by key"}
		kb, start, end, err := window.SplitKeyIndexKey(b)
		if err != nil {
			e.Index = "by end"
			if kb, start, end, err = window.SplitEndIndexKey(b); err != nil {
				return e, err
			}
		}
		e.Start, e.End = time.UnixMilli(start).UTC(), time.UnixMilli(end).UTC()
		e.Key, err = key.Decode(kb)
		return e, err
	})
	values := serde.Funcs(func(v sessionValue[A]) ([]byte, error) {
		if v.Aggregate == nil {
			return []byte{}, nil
		}
		return agg.Encode(*v.Aggregate)
	}, func(b []byte) (sessionValue[A], error) {
		if len(b) == 0 {
			return sessionValue[A]{}, nil
		}
		a, err := agg.Decode(b)
		return sessionValue[A]{Aggregate: &a}, err
	})
	stream.SetStoreFormat(j, store, keys, values)
}

func dedupeStoreFormat[ID any](j *stream.Job, store string, id serde.Serde[ID]) {
	keys := serde.Funcs(func(e dedupeEntry[ID]) ([]byte, error) {
		ib, err := id.Encode(e.ID)
		if err != nil {
			return nil, encodeFailed("id", err)
		}
		switch e.Index {
		case "id":
			return append([]byte{dedupeByID}, ib...), nil
		case "expiry":
			return dedupeTimeKey(nil, e.Seen.UnixMilli(), ib), nil
		}
		return nil, fmt.Errorf(`operators: dedupe store index %q: want "id" or "expiry"`, e.Index)
	}, func(b []byte) (dedupeEntry[ID], error) {
		var e dedupeEntry[ID]
		var ib []byte
		switch {
		case len(b) >= 1 && b[0] == dedupeByID:
			e.Index, ib = "id", b[1:]
		case len(b) >= 1+window.TimeLen && b[0] == dedupeByTime:
			e.Index, e.Seen, ib = "expiry", time.UnixMilli(window.Time(b[1:])).UTC(), b[1+window.TimeLen:]
		default:
			return e, window.ErrCorrupt
		}
		var err error
		e.ID, err = id.Decode(ib)
		return e, err
	})
	values := serde.Funcs(func(v dedupeValue) ([]byte, error) {
		if v.Seen == nil {
			return []byte{}, nil
		}
		return window.AppendTime(nil, v.Seen.UnixMilli()), nil
	}, func(b []byte) (dedupeValue, error) {
		switch len(b) {
		case 0:
			return dedupeValue{}, nil
		case window.TimeLen:
			seen := time.UnixMilli(window.Time(b)).UTC()
			return dedupeValue{Seen: &seen}, nil
		}
		return dedupeValue{}, window.ErrCorrupt
	})
	stream.SetStoreFormat(j, store, keys, values)
}
