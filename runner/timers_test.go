package runner_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
)

// idleTask is a low-level task with stream-time timers: each record of a
// key (re)arms the key's timer 30ms after it; when stream time reaches a
// timer, the task writes "<key> idle since <time>" to "out".
type idleTask struct{ timers stream.Timers }

func (it *idleTask) Init(ctx stream.Context) (err error) {
	it.timers, err = ctx.Timers("idle-timers")
	return err
}

func (it *idleTask) Process(_ stream.Context, rec stream.RawRecord) error {
	return it.timers.Set(stream.StreamTimeTimer, rec.Key, rec.Timestamp.Add(30*time.Millisecond))
}

func (it *idleTask) OnTimer(ctx stream.Context, tm stream.Timer) error {
	return ctx.Emit("out", stream.RawRecord{Key: tm.Key, Value: fmt.Appendf(nil, "idle since %d", tm.At.UnixMilli()-30)})
}

func idleJob() *stream.Job {
	job := stream.NewJob("idlejob")
	stream.AddTask(job, stream.TaskSpec{
		Name: "idle", Inputs: []string{"in"}, Outputs: []string{"out"}, Timers: "idle-timers",
		New: func() stream.Task { return new(idleTask) },
	})
	return job
}

// Stream-time timers through the runner, stopped and restarted twice
// (once on an empty state directory), fire as the in-process driver's do
// over the same log without restarts: the timers pending at each stop are
// restored with the store, and stream time with the commit, so each fires
// once, after the same record.
func TestTimersExactAcrossRestarts(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 9))
	first := t.TempDir()
	var all []*kgo.Record
	at := int64(1_700_000_000_000)
	for phase, dir := range []string{first, t.TempDir(), first} {
		recs := make([]*kgo.Record, 400)
		for i := range recs {
			at += int64(rng.IntN(3))
			recs[i] = &kgo.Record{Topic: "in", Key: fmt.Appendf(nil, "k%d", rng.IntN(40)), Value: []byte("v"),
				Timestamp: time.UnixMilli(at - int64(rng.IntN(20)))}
		}
		ctx, cancel := context.WithTimeout(context.Background(), stWait)
		if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		cancel()
		all = append(all, recs...)
		log := stNewLog(t)
		stRunToEnd(t, idleJob(), e.config(dir, log.logger(fmt.Sprintf("phase %d", phase))))
	}

	d, err := runnertest.New(idleJob(), runnertest.Partitions("in", stPartitions), runnertest.Partitions("out", stPartitions))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, r := range all {
		if err := d.Pipe("in", stream.RawRecord{Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Partition: r.Partition}); err != nil {
			t.Fatal(err)
		}
	}
	n := compareByTask(t, e, d, "out", func(key []byte) string { return string(key) })
	if n < 100 {
		t.Errorf("only %d timers fired; the test needs more", n)
	}
	t.Logf("%d records, %d timers fired", len(all), n)
}

// reminderTask sets, for each record, a wall-clock timer of the record's
// key at the time its value says (unix milliseconds); when the timer
// fires it writes "<key> fired" to "out".
type reminderTask struct{ timers stream.Timers }

func (rt *reminderTask) Init(ctx stream.Context) (err error) {
	rt.timers, err = ctx.Timers("reminders")
	return err
}

func (rt *reminderTask) Process(_ stream.Context, rec stream.RawRecord) error {
	ms, err := strconv.ParseInt(string(rec.Value), 10, 64)
	if err != nil {
		return err
	}
	return rt.timers.Set(stream.WallClockTimer, rec.Key, time.UnixMilli(ms))
}

func (rt *reminderTask) OnTimer(ctx stream.Context, tm stream.Timer) error {
	return ctx.Emit("out", stream.RawRecord{Key: tm.Key, Value: append(bytes.Clone(tm.Key), " fired"...)})
}

// Wall-clock timers fire in the runner when their time comes, with no
// input arriving, and are kept in their store: one pending when the job
// stops fires after it restarts. Each fires once across the two runs,
// under exactly-once too (inside the loop's transaction).
func TestWallClockTimersAcrossRestart(t *testing.T) {
	t.Parallel()
	for _, mode := range []runner.Guarantee{runner.AtLeastOnce, runner.ExactlyOnce} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			testWallClockTimersAcrossRestart(t, mode)
		})
	}
}

func testWallClockTimersAcrossRestart(t *testing.T, mode runner.Guarantee) {
	e := stSetup(t, "in", "out")
	job := func() *stream.Job {
		job := stream.NewJob("reminders")
		stream.AddTask(job, stream.TaskSpec{
			Name: "reminders", Inputs: []string{"in"}, Outputs: []string{"out"}, Timers: "reminders",
			New: func() stream.Task { return new(reminderTask) },
		})
		return job
	}
	fired := func() map[string]int {
		out := map[string]int{}
		for _, r := range e.readAll("out") {
			out[string(r.Key)]++
		}
		return out
	}
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	err := e.cl.ProduceSync(ctx,
		&kgo.Record{Topic: "in", Key: []byte("soon"), Value: strconv.AppendInt(nil, now.UnixMilli(), 10)},
		&kgo.Record{Topic: "in", Key: []byte("later"), Value: strconv.AppendInt(nil, now.Add(2*time.Second).UnixMilli(), 10)},
	).FirstErr()
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	dir := t.TempDir()
	cfg := e.config(dir, stNewLog(t).logger("run 1"))
	cfg.Processing = mode
	// At least once, outputs are visible at once: the loop must wake for
	// the timers, not for commits. Exactly once, at the commit.
	cfg.CommitInterval = map[runner.Guarantee]time.Duration{runner.AtLeastOnce: 5 * time.Second, runner.ExactlyOnce: 200 * time.Millisecond}[mode]
	rn := stStart(t, job(), cfg)
	waitWithin(t, stWait, `"soon" to fire`, func() bool { return fired()["soon"] > 0 })
	rn.stop(t, "run 1")
	laterInRun1 := fired()["later"] > 0

	cfg.Logger = stNewLog(t).logger("run 2")
	rn = stStart(t, job(), cfg)
	waitWithin(t, stWait, `"later" to fire`, func() bool { return fired()["later"] > 0 })
	rn.stop(t, "run 2")
	if got := fired(); got["soon"] != 1 || got["later"] != 1 {
		t.Errorf("timers fired %v, want each once", got)
	}
	t.Logf(`"later" fired in run %d`, map[bool]int{true: 1, false: 2}[laterInRun1])
}
