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
	"os"

	"github.com/samsa-go/samsa/internal/testjob"
	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

func main() {
	job := stream.NewJob("crashjob")
	in := stream.Input(job, "in", serde.Bytes, serde.String)
	in = testjob.Throttle(in, testjob.Delay("crashjob", "CRASHJOB_RECORD_DELAY"))
	if run := os.Getenv("CRASHJOB_RUN"); run != "" {
		in = operators.Process(in, func(next stream.Processor[[]byte, string]) stream.Processor[[]byte, string] {
			return stream.ProcessorFunc[[]byte, string](func(ctx stream.Context, rec stream.Record[[]byte, string]) error {
				rec.Headers = append(rec.Headers[:len(rec.Headers):len(rec.Headers)], stream.Header{Key: "crashjob-run", Value: []byte(run)})
				return next.Process(ctx, rec)
			})
		})
	}
	out := operators.MapValues(in, func(v string) string { return v + "-out" })
	stream.Output(out, "out", serde.Bytes, serde.String)
	runner.Main(job)
}
