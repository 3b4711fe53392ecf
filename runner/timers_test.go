package runner_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

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
