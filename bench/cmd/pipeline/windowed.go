package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// The windowed workload counts the records of each key per one-second
// tumbling window of event time and writes each window's count once, when
// the window closes (examples/windowed's job, with byte keys). The seed
// spreads the input evenly over 10 seconds of event time: ten windows,
// each holding every key a tenth of its records (1,000,000 records over
// 10,000 keys: ten times). The last window of each partition never closes
// (no later record): nine windows' counts are written.

const (
	windowSize = time.Second
	windowSpan = 10_000 // milliseconds of event time the input spans
)

// windowEpoch is the event time of the first record.
var windowEpoch = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()

// windowedTimestamp is the timestamp of input record i of n.
func windowedTimestamp(i, n int) time.Time {
	return time.UnixMilli(windowEpoch + int64(i)*windowSpan/int64(n))
}

// windowedExpect returns what a windowed count of the seeded input
// writes: one result per key and closed window, and the records those
// results count. A partition's windows close once its stream time (the
// time of its last record) reaches their end.
func windowedExpect(records int, keys [][]byte, input string, partitions int) (results, counted int64) {
	part := kgo.StickyKeyPartitioner(nil).ForTopic(input)
	keyPart := make([]int, len(keys))
	for k, key := range keys {
		keyPart[k] = part.Partition(&kgo.Record{Key: key}, partitions)
	}
	streamTime := make([]int64, partitions)
	for i := range records {
		streamTime[keyPart[i%len(keys)]] = windowedTimestamp(i, records).UnixMilli()
	}
	type window struct {
		key   int
		start int64
	}
	seen := map[window]bool{}
	size := windowSize.Milliseconds()
	for i := range records {
		k := i % len(keys)
		start := windowedTimestamp(i, records).UnixMilli() / size * size
		if start+size > streamTime[keyPart[k]] {
			continue // still open
		}
		counted++
		if w := (window{k, start}); !seen[w] {
			seen[w] = true
			results++
		}
	}
	return results, counted
}

// windowedJob is the samsa windowed count.
func windowedJob(spec childSpec, first *firstRecord) *stream.Job {
	job := stream.NewJob(spec.Group)
	in := stream.Input(job, spec.Input, serde.Bytes, serde.Bytes)
	in = operators.Peek(in, func([]byte, []byte) { first.mark() })
	counts := operators.WindowedCount(operators.GroupByKey(in, serde.Bytes, serde.Bytes), "counts",
		operators.Tumbling(windowSize).EmitFinal())
	stream.Output(counts.ToStream(), spec.Output, stream.WindowedSerde(serde.Bytes), serde.Int64)
	return job
}

// runSamsaWindowed runs the samsa windowed count.
func runSamsaWindowed(ctx context.Context, spec childSpec, first *firstRecord) error {
	return runJob(ctx, spec, windowedJob(spec, first), nil)
}

// runBaselineWindowed is the hand-written windowed count: per input
// partition, its stream time and its open windows' counts in maps; a
// window's counts are produced when the partition's stream time reaches
// its end, with the window's latest record time, keyed as samsa keys them
// (key, start, end). Records for closed windows are dropped. Nothing is
// durable.
func runBaselineWindowed(ctx context.Context, spec childSpec, first *firstRecord) error {
	parts := map[int32]*windowedPartition{}
	return handWritten(ctx, spec, first, func(in *kgo.Record, emit func(*kgo.Record)) {
		p := parts[in.Partition]
		if p == nil {
			p = &windowedPartition{open: map[int64]map[string]*windowCount{}}
			parts[in.Partition] = p
		}
		p.add(in, emit)
	})
}

type windowCount struct{ n, latest int64 }

type windowedPartition struct {
	streamTime int64
	starts     []int64 // of the open windows, in order
	open       map[int64]map[string]*windowCount
}

func (p *windowedPartition) add(in *kgo.Record, emit func(*kgo.Record)) {
	size := windowSize.Milliseconds()
	ts := in.Timestamp.UnixMilli()
	p.streamTime = max(p.streamTime, ts)
	if start := ts / size * size; start+size > p.streamTime {
		counts := p.open[start]
		if counts == nil {
			counts = map[string]*windowCount{}
			p.open[start] = counts
			i, _ := slices.BinarySearch(p.starts, start)
			p.starts = slices.Insert(p.starts, i, start)
		}
		c := counts[string(in.Key)]
		if c == nil {
			c = &windowCount{}
			counts[string(in.Key)] = c
		}
		c.n++
		c.latest = max(c.latest, ts)
	}
	for len(p.starts) > 0 && p.starts[0]+size <= p.streamTime {
		start := p.starts[0]
		for key, c := range p.open[start] {
			k := append(make([]byte, 0, len(key)+16), key...)
			k = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(k, uint64(start)), uint64(start+size))
			emit(&kgo.Record{Key: k, Value: binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(c.n)), Timestamp: time.UnixMilli(c.latest)})
		}
		delete(p.open, start)
		p.starts = p.starts[1:]
	}
}

// checkWindowed checks a windowed count's output: total records, each an
// 8-byte count, adding up to the records of the closed windows.
func (h *harness) checkWindowed(ctx context.Context, topic string, total int64) error {
	var sum int64
	var bad int
	err := h.readTopic(ctx, topic, total, func(r *kgo.Record) {
		if len(r.Value) != 8 {
			bad++
			return
		}
		sum += int64(binary.BigEndian.Uint64(r.Value))
	})
	switch {
	case err != nil:
		return err
	case bad > 0:
		return fmt.Errorf("%s: %d records are not 8-byte counts", topic, bad)
	case sum != h.wantSum:
		return fmt.Errorf("%s: its %d window counts add up to %d, want %d", topic, total, sum, h.wantSum)
	}
	return nil
}

// readTopic calls fn for the first total records of topic, read_committed.
func (h *harness) readTopic(ctx context.Context, topic string, total int64, fn func(*kgo.Record)) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(h.brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for read := int64(0); read < total; {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("read %s: %d of %d records: %w", topic, read, total, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			fn(r)
		})
	}
	return nil
}
