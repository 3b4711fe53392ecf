package engine

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/samsa-go/samsa/stream"
)

// Stream time and timers are kept by the task's stream.Instance; the task
// restores the one and fires the wall-clock kind of the other, for the
// runner and the test driver.

// SetStreamTime restores the task's stream time (the runner keeps it with
// each commit). Call it before the task's first record.
func (t *Task) SetStreamTime(st time.Time) { t.inst.SetStreamTime(st) }

// FireWallClock fires the task's wall-clock timers that are due at now,
// between records. The runner passes the wall clock; the test driver its
// own clock. What they emit and store is part of the next commit. A
// failing timer stops the task: it has no input record to skip. The timers
// due are fired as one: if one fails, what the others emitted and stored
// is undone with its own, so the commit at shutdown holds none of it and
// they all fire again after the restart.
func (t *Task) FireWallClock(now time.Time) (err error) {
	t.cur = coords{} // no input record
	t.tc.begin()
	defer func() {
		if r := recover(); r != nil {
			err = &stream.PanicError{Value: r, Stack: debug.Stack()}
		}
		if err != nil {
			t.tc.discard()
			err = fmt.Errorf("engine: task %s: %w", t.id, err)
			return
		}
		t.tc.release(t)
	}()
	return t.inst.FireTimers(&t.tc, stream.WallClockTimer, now)
}

// NextWallClock returns when the task's next wall-clock timer is due, if
// it has one. It reads the task's timer stores: call it only once they
// are restored.
func (t *Task) NextWallClock() (time.Time, bool, error) {
	return t.inst.NextTimer(stream.WallClockTimer)
}

// Timers implements stream.Context.
func (c *taskContext) Timers(name string) (stream.Timers, error) {
	ts, err := c.inst.Timers(name)
	if err != nil {
		return nil, fmt.Errorf("engine: task %s: %w", c.id, err)
	}
	return ts, nil
}
