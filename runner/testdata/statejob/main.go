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
	"github.com/samsa-go/samsa/internal/testjob"
	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func main() {
	job := stream.NewJob("statejob")
	in := stream.Input(job, "in", serde.String, serde.String)
	in = testjob.Throttle(in, testjob.Delay("statejob", "STATEJOB_RECORD_DELAY"))
	counts := operators.Count(operators.GroupByKey(in, serde.String, serde.String), "counts")
	stream.Output(counts.ToStream(), "out", serde.String, serde.Int64)
	runner.Main(job)
}
