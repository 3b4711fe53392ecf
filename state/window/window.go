// Package window lays out windowed state in a key-value store
// ([stream.Store]): the keys of window stores, chosen so that finding a
// window, finding a key's windows and expiring old windows are each a
// point lookup or one range scan, with no scan over windows that are not
// wanted.
//
// # Time
//
// Times are milliseconds since the Unix epoch, as Kafka's timestamps are,
// written in 8 bytes big-endian with the sign bit flipped ([AppendTime]),
// so that the byte order of encoded times is their numeric order,
// negative times included.
//
// # Two layouts
//
// Fixed-size windows (tumbling, hopping) are kept start first: key
// start|key. The aggregations that use them know which windows a record
// falls into, so they only look windows up by (start, key); and windows
// close in order of their start, so expiring them is one range scan from
// the oldest start, which also gives them in a deterministic order (start,
// then key). One entry per window: an update writes one key. Finding every
// window of one key would scan all keys in the time range; nothing here
// needs it.
//
// Windows of varying size (sessions) and time-indexed buffers (the sides
// of a stream-stream join) need both: the windows of one key near a time,
// and expiry by time across keys. They keep two entries per window, one
// per index:
//
//	by key:  0x01 | uvarint(len(key)) | key | end | start  -> value
//	by end:  0x02 | end | start | key                      -> (empty)
//
// The by-key index answers "the windows of k ending at or after t" with
// one range scan; the by-end index gives expiry in (end, start, key)
// order. Creating or deleting a window writes both; updating its value
// writes one. Each write goes to the store's changelog like any other, so
// window stores are restored, and made exact after a crash, by the same
// protocol as every store.
//
// Buffers that must hold several entries with the same key and times can
// build their own keys from [AppendTime] and [AppendKey].
package window

import (
	"encoding/binary"
	"errors"
)

// TimeLen is the length of an encoded time.
const TimeLen = 8

// AppendTime appends the order-preserving encoding of ms to dst.
func AppendTime(dst []byte, ms int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(ms)^(1<<63))
}

// Time decodes a time written by AppendTime from the first TimeLen bytes
// of b, which must be at least that long.
func Time(b []byte) int64 {
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
}

// AppendKey appends key with its length in front (a uvarint), so that what
// follows it in a composite key never mixes with the key's own bytes.
func AppendKey(dst, key []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	return append(dst, key...)
}

// SplitKey splits b, which starts with a key written by AppendKey, into
// the key and the rest. The key shares b's memory.
func SplitKey(b []byte) (key, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, ErrCorrupt
	}
	return b[w : w+int(n)], b[w+int(n):], nil
}

// ErrCorrupt is returned for a store key that does not have the layout of
// its window store.
var ErrCorrupt = errors.New("window: malformed window store key")

// Prefixes of the two indexes of an indexed window store.
const (
	byKey byte = 0x01
	byEnd byte = 0x02
)

// FixedKey appends the key of fixed-size window (start, key) to dst:
// start|key.
func FixedKey(dst []byte, start int64, key []byte) []byte {
	return append(AppendTime(dst, start), key...)
}

// SplitFixedKey splits a key written by FixedKey. The key shares b's
// memory.
func SplitFixedKey(b []byte) (start int64, key []byte, err error) {
	if len(b) < TimeLen {
		return 0, nil, ErrCorrupt
	}
	return Time(b), b[TimeLen:], nil
}

// KeyIndexKey appends the by-key index entry of window (key, start, end)
// of an indexed store to dst.
func KeyIndexKey(dst, key []byte, start, end int64) []byte {
	dst = AppendKey(append(dst, byKey), key)
	return AppendTime(AppendTime(dst, end), start)
}

// KeyIndexPrefix appends the prefix shared by every window of key in the
// by-key index, followed by end if it is given, to dst: the lower bound of
// a scan of key's windows ending at or after end.
func KeyIndexPrefix(dst, key []byte, end ...int64) []byte {
	dst = AppendKey(append(dst, byKey), key)
	for _, e := range end {
		dst = AppendTime(dst, e)
	}
	return dst
}

// EndIndexKey appends the by-end index entry of window (key, start, end)
// of an indexed store to dst.
func EndIndexKey(dst, key []byte, start, end int64) []byte {
	dst = AppendTime(append(dst, byEnd), end)
	return append(AppendTime(dst, start), key...)
}

// EndIndexBound appends the by-end index position of end to dst: the
// bound of a scan of the windows ending before or from end.
func EndIndexBound(dst []byte, end int64) []byte {
	return AppendTime(append(dst, byEnd), end)
}

// SplitKeyIndexKey splits a by-key index entry. The key shares b's memory.
func SplitKeyIndexKey(b []byte) (key []byte, start, end int64, err error) {
	if len(b) < 1 || b[0] != byKey {
		return nil, 0, 0, ErrCorrupt
	}
	key, rest, err := SplitKey(b[1:])
	if err != nil || len(rest) != 2*TimeLen {
		return nil, 0, 0, ErrCorrupt
	}
	return key, Time(rest[TimeLen:]), Time(rest), nil
}

// SplitEndIndexKey splits a by-end index entry. The key shares b's memory.
func SplitEndIndexKey(b []byte) (key []byte, start, end int64, err error) {
	if len(b) < 1+2*TimeLen || b[0] != byEnd {
		return nil, 0, 0, ErrCorrupt
	}
	return b[1+2*TimeLen:], Time(b[1+TimeLen:]), Time(b[1:]), nil
}
