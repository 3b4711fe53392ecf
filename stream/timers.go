package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// timerStore keeps the timers of one timer store and fires them. The
// store belongs to the runtime; its layout:
//
//	due:    'd' | kind | time | key  -> (empty)   the order timers fire in
//	by key: 'k' | kind | key         -> time      to move or cancel a timer
//
// Times are milliseconds, 8 bytes big-endian with the sign bit flipped so
// that byte order is time order (as package state/window writes them).
type timerStore struct {
	name  string
	store Store
	owner TimerHandler
	clock *clock

	loaded bool
	next   [3]int64 // by kind: no timer is due before this; valid once loaded
	buf    []byte
}

const (
	timerDue   byte = 'd'
	timerByKey byte = 'k'
	// timerBatch is how many due timers a round reads at once.
	timerBatch = 256
)

func validKind(kind TimerKind) error {
	if kind != StreamTimeTimer && kind != WallClockTimer {
		return fmt.Errorf("stream: timer kind %d: want StreamTimeTimer or WallClockTimer", kind)
	}
	return nil
}

func appendTime(dst []byte, ms int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(ms)^(1<<63))
}

func decodeTime(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

func (s *timerStore) byKeyKey(kind TimerKind, key []byte) []byte {
	s.buf = append(append(s.buf[:0], timerByKey, byte(kind)), key...)
	return s.buf
}

func dueKey(kind TimerKind, ms int64, key []byte) []byte {
	return append(appendTime([]byte{timerDue, byte(kind)}, ms), key...)
}

// lookup returns when timer (kind, key) is due, if it is set.
func (s *timerStore) lookup(kind TimerKind, key []byte) (int64, bool, error) {
	v, err := s.store.Get(s.byKeyKey(kind, key))
	switch {
	case errors.Is(err, ErrNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("stream: timer store %s: %w", s.name, err)
	case len(v) != 8:
		return 0, false, fmt.Errorf("stream: timer store %s: malformed entry for key %x", s.name, key)
	}
	return decodeTime(v), true, nil
}

func (s *timerStore) Set(kind TimerKind, key []byte, at time.Time) error {
	if err := validKind(kind); err != nil {
		return err
	}
	ms := at.UnixMilli()
	old, found, err := s.lookup(kind, key)
	if err != nil {
		return err
	}
	if found {
		if old == ms {
			return nil
		}
		if err := s.store.Delete(dueKey(kind, old, key)); err != nil {
			return err
		}
	}
	if err := s.store.Put(s.byKeyKey(kind, key), appendTime(nil, ms)); err != nil {
		return err
	}
	if err := s.store.Put(dueKey(kind, ms, key), nil); err != nil {
		return err
	}
	if s.loaded && ms < s.next[kind] {
		s.next[kind] = ms
	}
	return nil
}

func (s *timerStore) Delete(kind TimerKind, key []byte) error {
	if err := validKind(kind); err != nil {
		return err
	}
	old, found, err := s.lookup(kind, key)
	if err != nil || !found {
		return err
	}
	if err := s.store.Delete(dueKey(kind, old, key)); err != nil {
		return err
	}
	return s.store.Delete(s.byKeyKey(kind, key))
	// next stays a lower bound: the next round finds out.
}

func (s *timerStore) Get(kind TimerKind, key []byte) (time.Time, bool, error) {
	if err := validKind(kind); err != nil {
		return time.Time{}, false, err
	}
	ms, found, err := s.lookup(kind, key)
	if err != nil || !found {
		return time.Time{}, false, err
	}
	return time.UnixMilli(ms), true, nil
}

// first returns the time of the earliest timer of kind, or MaxInt64.
func (s *timerStore) first(kind TimerKind) (int64, error) {
	it := s.store.Prefix([]byte{timerDue, byte(kind)})
	defer it.Close()
	if it.Next() {
		k := it.Key()
		if len(k) < 10 {
			return 0, fmt.Errorf("stream: timer store %s: malformed key %x", s.name, k)
		}
		return decodeTime(k[2:]), nil
	}
	return math.MaxInt64, it.Err()
}

// nextDue returns when the next timer of kind is due, or MaxInt64. The
// first call reads the store, which must be restored by then: timers are
// loaded lazily, after Init.
func (s *timerStore) nextDue(kind TimerKind) (int64, error) {
	if !s.loaded {
		for _, k := range []TimerKind{StreamTimeTimer, WallClockTimer} {
			n, err := s.first(k)
			if err != nil {
				return 0, err
			}
			s.next[k] = n
		}
		s.loaded = true
	}
	return s.next[kind], nil
}

// fire delivers the timers of kind due at now, in order of time then key.
// Timers set during the round behind its position wait for the next one.
func (s *timerStore) fire(ctx Context, kind TimerKind, now int64) error {
	next, err := s.nextDue(kind)
	if err != nil || next > now {
		return err
	}
	lo := []byte{timerDue, byte(kind)}
	var hi []byte
	if now < math.MaxInt64 {
		hi = appendTime([]byte{timerDue, byte(kind)}, now+1)
	} else {
		hi = []byte{timerDue, byte(kind) + 1}
	}
	due := make([][]byte, 0, timerBatch)
	saved := s.clock.current
	defer func() { s.clock.current = saved }()
	for {
		due = due[:0]
		it := s.store.Range(lo, hi)
		for len(due) < timerBatch && it.Next() {
			due = append(due, bytes.Clone(it.Key()))
		}
		err := it.Err()
		it.Close()
		if err != nil {
			return fmt.Errorf("stream: timer store %s: %w", s.name, err)
		}
		if len(due) == 0 {
			break
		}
		for _, dk := range due {
			if len(dk) < 10 {
				return fmt.Errorf("stream: timer store %s: malformed key %x", s.name, dk)
			}
			t := Timer{Kind: kind, Key: dk[10:], At: time.UnixMilli(decodeTime(dk[2:]))}
			if err := s.store.Delete(dk); err != nil {
				return err
			}
			if err := s.store.Delete(s.byKeyKey(kind, t.Key)); err != nil {
				return err
			}
			s.clock.current = t.At
			if err := s.owner.OnTimer(ctx, t); err != nil {
				return fmt.Errorf("%s timer %q at %s: %w", kind, t.Key, t.At.UTC().Format(time.RFC3339Nano), err)
			}
		}
		lo = append(bytes.Clone(due[len(due)-1]), 0) // just past the last one fired
	}
	s.next[kind], err = s.first(kind)
	return err
}
