package runner

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Wall-clock timers (stream.WallClockTimer) fire between rounds of the
// loop, after the round's records, inside its transaction under
// exactly-once, so what they write and store is part of the next commit
// like the records'. The loop's poll waits no longer than until the next
// one is due, so they fire on time when no input arrives. Stream-time
// timers fire within the processing of records, in the tasks.

// nextWallClock values besides a time: no timer, or not known yet (at
// start, and while a task is restoring: its timers are in its stores).
const (
	noWallClock      = math.MaxInt64
	unknownWallClock = 0
)

// fireWallClockLocked fires the wall-clock timers due now, task by task in
// task order, and notes when the next one is due.
func (m *member) fireWallClockLocked() error {
	now := time.Now()
	next := int64(noWallClock)
	for _, id := range slices.SortedFunc(maps.Keys(m.tasks), compareTaskIDs) {
		t := m.tasks[id]
		if t.restoring {
			next = unknownWallClock // known once it is restored
			continue
		}
		if t.err != nil {
			continue // it stopped
		}
		due, ok, err := t.NextWallClock()
		if err != nil {
			return fmt.Errorf("runner: task %s: timers: %w", id, err)
		}
		if ok && !due.After(now) {
			if err := t.FireWallClock(now); err != nil {
				return err
			}
			if due, ok, err = t.NextWallClock(); err != nil {
				return fmt.Errorf("runner: task %s: timers: %w", id, err)
			}
		}
		if ok && next != unknownWallClock {
			next = min(next, due.UnixMilli())
		}
	}
	m.nextWallClock.Store(next)
	return nil
}

// unknownWallClockWait is how long the loop waits for records while it
// does not know when the next wall-clock timer is due.
const unknownWallClockWait = 10 * time.Millisecond

// untilWallClock returns how long the loop may wait for records before a
// wall-clock timer is due, or max if none is due sooner.
func (m *member) untilWallClock(max time.Duration) time.Duration {
	switch next := m.nextWallClock.Load(); next {
	case noWallClock:
		return max
	case unknownWallClock:
		return min(max, unknownWallClockWait) // a round finds out
	default:
		return min(max, time.Until(time.UnixMilli(next)))
	}
}
