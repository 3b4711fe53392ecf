// Command statejob is the stateful job the runner's state tests start,
// kill and restart: it counts the records of each key of topic "in" (no
// repartition: the input is partitioned by key) in the store "counts",
// and writes each new count to topic "out" as an 8-byte big-endian int64.
// Its changelog is "statejob-counts-changelog".
//
// STATEJOB_RECORD_DELAY (a Go duration), if set, slows each task down to
// about one record per delay, so a test can stop the process mid-stream.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func main() {
	var delay time.Duration
	if s := os.Getenv("STATEJOB_RECORD_DELAY"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "statejob: STATEJOB_RECORD_DELAY=%q: %v\n", s, err)
			os.Exit(2)
		}
		delay = d
	}
	job := stream.NewJob("statejob")
	in := stream.Input(job, "in", serde.String, serde.String)
	if delay > 0 {
		in = operators.Process(in, func(next stream.Processor[string, string]) stream.Processor[string, string] {
			return &throttle{next: next, delay: delay}
		})
	}
	counts := operators.Count(operators.GroupByKey(in, serde.String, serde.String), "counts")
	stream.Output(counts.ToStream(), "out", serde.String, serde.Int64)
	runner.Main(job)
}

// throttle holds a task to about one record per delay. time.Sleep is
// coarse, so it sleeps once a millisecond is owed.
type throttle struct {
	next  stream.Processor[string, string]
	delay time.Duration
	owed  time.Duration
}

func (t *throttle) Process(ctx stream.Context, rec stream.Record[string, string]) error {
	t.owed += t.delay
	if t.owed >= time.Millisecond {
		time.Sleep(t.owed)
		t.owed = 0
	}
	return t.next.Process(ctx, rec)
}
