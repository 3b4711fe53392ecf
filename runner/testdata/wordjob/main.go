// Command wordjob is the word count the runner's exactly-once tests start,
// kill and restart: lines of topic "lines" are split into words, re-keyed
// by word through the repartition topic "wordjob-words-repartition",
// counted in the store "counts" (changelog "wordjob-counts-changelog"),
// and each new count is written to "word-counts" as an 8-byte big-endian
// int64. Words are separated by white space.
//
// WORDJOB_LINE_DELAY (a Go duration), if set, slows each task of the
// splitting sub-topology down to about one line per delay, so a test can
// stop the process mid-stream.
package main

import (
	"strings"

	"github.com/samsa-go/samsa/internal/testjob"
	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func main() {
	job := stream.NewJob("wordjob")
	lines := stream.Input(job, "lines", serde.Bytes, serde.String)
	lines = testjob.Throttle(lines, testjob.Delay("wordjob", "WORDJOB_LINE_DELAY"))
	words := operators.FlatMapValues(lines, strings.Fields)
	byWord := operators.GroupBy(words, "words", func(_ []byte, w string) string { return w }, serde.String, serde.String)
	counts := operators.Count(byWord, "counts")
	stream.Output(counts.ToStream(), "word-counts", serde.String, serde.Int64)
	runner.Main(job)
}
