package main

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/samsa-go/samsa/bench"
	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// runSamsa is the samsa variant: the baseline's map as a job, Input →
// MapValues → Output with byte serdes, run by the runner until the end
// offsets it sees at its start. The job is named after the group, so each
// run has a fresh consumer group. Everything else but the number of
// threads (--samsa-threads) is the runner's default.
func runSamsa(ctx context.Context, spec childSpec, first *firstRecord) error {
	job := stream.NewJob(spec.Group)
	values := stream.Input(job, spec.Input, serde.Bytes, serde.Bytes)
	upper := operators.MapValues(values, func(v []byte) []byte {
		first.mark()
		return bench.Upper(v)
	})
	stream.Output(upper, spec.Output, serde.Bytes, serde.Bytes)

	r, err := runner.New(job, runner.Config{
		Brokers:        spec.Brokers,
		UntilEnd:       true,
		CommitInterval: spec.CommitInterval,
		Threads:        spec.Threads,
		Logger:         hclog.New(&hclog.LoggerOptions{Name: spec.Group, Level: hclog.Warn, Output: os.Stderr}),
	})
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
