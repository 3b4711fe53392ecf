// Command crashjob is the job the runner's process tests start, kill and
// restart: it copies topic "in" to topic "out", keeping each key and
// appending "-out" to each value.
//
// Two environment variables help the tests:
//
//   - CRASHJOB_RUN, if set, is added to every output record as the header
//     "crashjob-run", so a test can tell which process wrote a record.
//   - CRASHJOB_RECORD_DELAY (a Go duration) slows each task down to about
//     one record per delay, so a test can stop the process mid-stream.
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
	if s := os.Getenv("CRASHJOB_RECORD_DELAY"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "crashjob: CRASHJOB_RECORD_DELAY=%q: %v\n", s, err)
			os.Exit(2)
		}
		delay = d
	}
	run := os.Getenv("CRASHJOB_RUN")

	job := stream.NewJob("crashjob")
	in := stream.Input(job, "in", serde.Bytes, serde.String)
	tagged := operators.Process(in, func(next stream.Processor[[]byte, string]) stream.Processor[[]byte, string] {
		return &tagger{next: next, run: run, delay: delay}
	})
	out := operators.MapValues(tagged, func(v string) string { return v + "-out" })
	stream.Output(out, "out", serde.Bytes, serde.String)
	runner.Main(job)
}

// tagger adds the run header and holds each task to about one record per
// delay. time.Sleep is coarse, so it sleeps once a millisecond is owed.
type tagger struct {
	next  stream.Processor[[]byte, string]
	run   string
	delay time.Duration
	owed  time.Duration
}

func (t *tagger) Process(ctx stream.Context, rec stream.Record[[]byte, string]) error {
	if t.delay > 0 {
		t.owed += t.delay
		if t.owed >= time.Millisecond {
			time.Sleep(t.owed)
			t.owed = 0
		}
	}
	if t.run != "" {
		rec.Headers = append(rec.Headers[:len(rec.Headers):len(rec.Headers)], stream.Header{Key: "crashjob-run", Value: []byte(t.run)})
	}
	return t.next.Process(ctx, rec)
}
