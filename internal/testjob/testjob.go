// Package testjob holds what the job binaries of samsa's own tests (under
// runner/testdata) share: a delay from the environment, and a throttle
// that lets a test stop a process mid-stream.
package testjob

import (
	"fmt"
	"os"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
)

// Delay returns the Go duration in the environment variable name, zero if
// it is unset. A malformed value stops the process with exit code 2.
func Delay(job, name string) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s=%q: %v\n", job, name, s, err)
		os.Exit(2)
	}
	return d
}

// Throttle holds each task of s to about one record per delay; a zero
// delay returns s as it is.
func Throttle[K, V any](s stream.Stream[K, V], delay time.Duration) stream.Stream[K, V] {
	if delay <= 0 {
		return s
	}
	return operators.Process(s, func(next stream.Processor[K, V]) stream.Processor[K, V] {
		return &throttle[K, V]{next: next, delay: delay}
	})
}

// throttle sleeps once a millisecond is owed: time.Sleep is coarse.
type throttle[K, V any] struct {
	next  stream.Processor[K, V]
	delay time.Duration
	owed  time.Duration
}

func (t *throttle[K, V]) Process(ctx stream.Context, rec stream.Record[K, V]) error {
	t.owed += t.delay
	if t.owed >= time.Millisecond {
		time.Sleep(t.owed)
		t.owed = 0
	}
	return t.next.Process(ctx, rec)
}
