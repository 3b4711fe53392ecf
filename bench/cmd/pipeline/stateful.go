package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/bench"
	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// workload is the work the variants of an invocation compare, and how the
// harness seeds and checks it.
type workload struct {
	variants map[string]variant
	// lines makes the input text lines of words (bench.Lines) instead of
	// values of letters.
	lines bool
	// counts says that each output record is a key's new count (8-byte
	// big-endian): the harness checks the last count of every key.
	counts bool
	// restore says that the harness first runs the samsa count job once,
	// and the variants then read that job's changelog.
	restore bool
	// windowed gives the input event times (see windowed.go) and checks
	// that each output record is a window's count, adding up to the
	// records of the closed windows.
	windowed bool
	// table seeds a table topic keyed like the input and checks that each
	// output record is its input joined with its key's table value (see
	// join.go).
	table bool
}

// workloads are the workloads by name (--workload).
var workloads = map[string]workload{
	// Upper-case each value: stateless consume→map→produce.
	"map": {variants: map[string]variant{
		"baseline": {run: runBaseline, writes: true},
		"samsa":    {run: runSamsa, writes: true},
		"consume":  {run: runConsume},
	}},
	// Count the records of each key, emitting each new count.
	"count": {counts: true, variants: map[string]variant{
		"baseline":  {run: runBaselineCount, writes: true},
		"samsa":     {run: runSamsaCount, writes: true},
		"samsa-eos": {run: runSamsaCount, writes: true, exactlyOnce: true},
	}},
	// Split lines into words and count each word, emitting each new count.
	"wordcount": {lines: true, counts: true, variants: map[string]variant{
		"baseline":  {run: runBaselineWordCount, writes: true},
		"samsa":     {run: runSamsaWordCount, writes: true},
		"samsa-eos": {run: runSamsaWordCount, writes: true, exactlyOnce: true},
	}},
	// Count the records of each key per one-second window of event time,
	// emitting each window's count once, when it closes.
	"windowed": {windowed: true, variants: map[string]variant{
		"baseline": {run: runBaselineWindowed, writes: true},
		"samsa":    {run: runSamsaWindowed, writes: true},
	}},
	// Join each record with its key's value in a table topic.
	"join": {table: true, variants: map[string]variant{
		"baseline": {run: runBaselineJoin, writes: true},
		"samsa":    {run: runSamsaJoin, writes: true},
	}},
	// Read the count job's changelog: a plain consumer of the whole topic
	// against samsa restoring its store from it.
	"restore": {restore: true, variants: map[string]variant{
		"baseline": {run: runConsume},
		"samsa":    {run: runRestore, rerun: true},
	}},
}

// counter holds a running count per key, as a hand-written loop keeps it:
// in a map, without durability.
type counter map[string]*int64

// inc adds one to the count of key and returns the record of its new
// count.
func (c counter) inc(key []byte, ts time.Time) *kgo.Record {
	n, ok := c[string(key)]
	if !ok {
		n = new(int64)
		c[string(key)] = n
	}
	*n++
	return &kgo.Record{Key: key, Value: binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(*n)), Timestamp: ts}
}

// runBaselineCount is the hand-written keyed count: the baseline's loop
// with a count per key in a map, each new count produced.
func runBaselineCount(ctx context.Context, spec childSpec, first *firstRecord) error {
	counts := counter{}
	return handWritten(ctx, spec, first, func(in *kgo.Record, emit func(*kgo.Record)) {
		emit(counts.inc(in.Key, in.Timestamp))
	})
}

// runBaselineWordCount is the hand-written word count: the baseline's loop
// splitting each line into words and counting them in a map, each new
// count produced. Being a single process, it needs no repartitioning.
func runBaselineWordCount(ctx context.Context, spec childSpec, first *firstRecord) error {
	counts := counter{}
	return handWritten(ctx, spec, first, func(in *kgo.Record, emit func(*kgo.Record)) {
		for _, w := range bench.Words(string(in.Value)) {
			emit(counts.inc([]byte(w), in.Timestamp))
		}
	})
}

// countJob is the samsa keyed count: Input → Count in the Pebble store
// "counts" (changelog "<job>-counts-changelog") → ToStream → Output.
func countJob(spec childSpec, first *firstRecord) *stream.Job {
	job := stream.NewJob(spec.Group)
	in := stream.Input(job, spec.Input, serde.Bytes, serde.Bytes)
	in = operators.Peek(in, func([]byte, []byte) { first.mark() })
	counts := operators.Count(operators.GroupByKey(in, serde.Bytes, serde.Bytes), "counts")
	if spec.Output != "" {
		stream.Output(counts.ToStream(), spec.Output, serde.Bytes, serde.Int64)
	}
	return job
}

// runSamsaCount runs the samsa keyed count.
func runSamsaCount(ctx context.Context, spec childSpec, first *firstRecord) error {
	return runJob(ctx, spec, countJob(spec, first), nil)
}

// runSamsaWordCount is the word-count example's job (examples/wordcount):
// lines split into words, re-keyed by word through the repartition topic
// "<job>-words-repartition", counted in the store "counts".
func runSamsaWordCount(ctx context.Context, spec childSpec, first *firstRecord) error {
	job := stream.NewJob(spec.Group)
	lines := stream.Input(job, spec.Input, serde.Bytes, serde.String)
	words := operators.FlatMapValues(lines, func(line string) []string {
		first.mark()
		return bench.Words(line)
	})
	byWord := operators.GroupBy(words, "words", func(_ []byte, w string) string { return w }, serde.String, serde.String)
	counts := operators.Count(byWord, "counts")
	stream.Output(counts.ToStream(), spec.Output, serde.String, serde.Int64)
	return runJob(ctx, spec, job, nil)
}

// runRestore runs the count job that the harness ran once already, in its
// group, with an empty state directory and no new input: the runner
// restores every task's store from the changelog, then finds nothing to
// process. The timed run is the restore, as the runner logs it
// ("restored tasks": all the tasks of an assignment, restored together);
// the records are those it restored.
func runRestore(ctx context.Context, spec childSpec, first *firstRecord) error {
	var logs bytes.Buffer // hclog serializes its writes
	log := hclog.New(&hclog.LoggerOptions{Name: spec.Group, Level: hclog.Info, Output: &logs, JSONFormat: true})
	err := runJob(ctx, spec, countJob(spec, first), log)
	took, restored, perr := restores(logs.Bytes())
	if err = errors.Join(err, perr); err != nil {
		os.Stderr.Write(logs.Bytes())
		return err
	}
	first.timed(took, restored)
	return nil
}

// restores sums the durations and records of the "restored tasks" lines
// of the runner's JSON logs.
func restores(logs []byte) (took time.Duration, records int64, err error) {
	dec := json.NewDecoder(bytes.NewReader(logs))
	var lines int
	for dec.More() {
		var line struct {
			Message string          `json:"@message"`
			Records int64           `json:"records"`
			Took    json.RawMessage `json:"took"`
		}
		if err := dec.Decode(&line); err != nil {
			return 0, 0, fmt.Errorf("runner logs: %w", err)
		}
		if line.Message != "restored tasks" {
			continue
		}
		d, err := parseDuration(line.Took)
		if err != nil {
			return 0, 0, fmt.Errorf("runner logs: took %s: %w", line.Took, err)
		}
		took += d
		records += line.Records
		lines++
	}
	if lines == 0 || took <= 0 {
		return 0, 0, errors.New("the runner logged no restore")
	}
	return took, records, nil
}

// parseDuration reads a duration as hclog writes it in JSON: nanoseconds,
// or a string such as "1.5s".
func parseDuration(raw json.RawMessage) (time.Duration, error) {
	var ns int64
	if err := json.Unmarshal(raw, &ns); err == nil {
		return time.Duration(ns), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, err
	}
	return time.ParseDuration(s)
}
