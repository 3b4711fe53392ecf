package main

import (
	"context"
	"fmt"
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
	return runJob(ctx, spec, job, nil)
}

// runJob runs job with the runner until the end offsets it sees at its
// start, logging to log (nil: warnings and errors to stderr). A stateful
// job gets a fresh state directory, removed when it returns.
func runJob(ctx context.Context, spec childSpec, job *stream.Job, log hclog.Logger) error {
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Name: spec.Group, Level: hclog.Warn, Output: os.Stderr})
	}
	dir, err := os.MkdirTemp("", "samsa-bench-state-")
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg := runner.Config{
		Brokers:        spec.Brokers,
		StateDir:       dir,
		UntilEnd:       true,
		CommitInterval: spec.CommitInterval,
		Threads:        spec.Threads,
		Logger:         log,
	}
	if spec.ExactlyOnce {
		cfg.Processing, cfg.CommitInterval = runner.ExactlyOnce, 0 // its default
	}
	r, err := runner.New(job, cfg)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
