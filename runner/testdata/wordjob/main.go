// Command wordjob is the word count the runner's exactly-once tests start,
// kill and restart: lines of topic "lines" are split into words, re-keyed
// by word through the repartition topic "wordjob-words-repartition",
// counted in the store "counts" (changelog "wordjob-counts-changelog"),
// and each new count is written to "word-counts" as an 8-byte big-endian
// int64. Words are runs of lower-case letters.
//
// WORDJOB_LINE_DELAY (a Go duration), if set, slows each task of the
// splitting sub-topology down to about one line per delay, so a test can
// stop the process mid-stream.
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func main() {
	var delay time.Duration
	if s := os.Getenv("WORDJOB_LINE_DELAY"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "wordjob: WORDJOB_LINE_DELAY=%q: %v\n", s, err)
			os.Exit(2)
		}
		delay = d
	}
	job := stream.NewJob("wordjob")
	lines := stream.Input(job, "lines", serde.Bytes, serde.String)
	if delay > 0 {
		lines = operators.Process(lines, func(next stream.Processor[[]byte, string]) stream.Processor[[]byte, string] {
			return &throttle{next: next, delay: delay}
		})
	}
	words := operators.FlatMapValues(lines, strings.Fields)
	byWord := operators.GroupBy(words, "words", func(_ []byte, w string) string { return w }, serde.String, serde.String)
	counts := operators.Count(byWord, "counts")
	stream.Output(counts.ToStream(), "word-counts", serde.String, serde.Int64)
	runner.Main(job)
}

// throttle holds a task to about one record per delay. time.Sleep is
// coarse, so it sleeps once a millisecond is owed.
type throttle struct {
	next  stream.Processor[[]byte, string]
	delay time.Duration
	owed  time.Duration
}

func (t *throttle) Process(ctx stream.Context, rec stream.Record[[]byte, string]) error {
	t.owed += t.delay
	if t.owed >= time.Millisecond {
		time.Sleep(t.owed)
		t.owed = 0
	}
	return t.next.Process(ctx, rec)
}
