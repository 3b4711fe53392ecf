package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/bench"
)

// maxPollRecords bounds the records taken per poll, as samsa's runner
// bounds them.
const maxPollRecords = 10_000

// runBaseline is the hand-written variant: consume, map, produce, with
// at-least-once commits.
func runBaseline(ctx context.Context, spec childSpec, first *firstRecord) error {
	return handWritten(ctx, spec, first, func(in *kgo.Record, emit func(*kgo.Record)) {
		emit(&kgo.Record{Key: in.Key, Value: bench.Upper(in.Value), Timestamp: in.Timestamp})
	})
}

// runConsume is the hand-written loop that only consumes and commits: what
// the broker delivers to a reader alone.
func runConsume(ctx context.Context, spec childSpec, first *firstRecord) error {
	return handWritten(ctx, spec, first, nil)
}

// process is the per-record work of a hand-written loop: it calls emit
// with each output record (key, value and timestamp) of an input record.
type process func(in *kgo.Record, emit func(out *kgo.Record))

// handWritten is the loop a competent franz-go user writes for
// at-least-once consume→process→produce: a consumer group with manual
// commits and rebalances held off while a poll is processed; each record
// processed by fn (nil: consume only) and its outputs produced
// asynchronously; every commit interval, a flush of the
// outputs, then a commit of the offsets polled. It stops once it has
// consumed the input up to the end offsets seen at its start, after a
// final flush and commit, and leaves the group.
//
// It reads and writes as samsa's runner does, so that the comparison is
// of the processing alone: read_committed, output partitions chosen by
// the caller from the key with Kafka's murmur2 (what samsa's Context.Emit
// does), no compression, and the input record's timestamp on the output
// record. Records are processed on the polling goroutine, one partition
// after the other.
func handWritten(ctx context.Context, spec childSpec, first *firstRecord, fn process) error {
	opts := []kgo.Opt{
		kgo.SeedBrokers(spec.Brokers...),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
	}
	remaining, outPartitions, err := bounds(ctx, opts, spec)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(spec.Input),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)...)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer cl.Close() // leaves the group

	partitioner := kgo.StickyKeyPartitioner(nil).ForTopic(spec.Output)
	var failed atomic.Pointer[error] // the first failed produce
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			err = fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
			failed.CompareAndSwap(nil, &err)
		}
	}
	emit := func(out *kgo.Record) {
		out.Topic = spec.Output
		out.Partition = int32(partitioner.Partition(out, outPartitions))
		cl.Produce(context.Background(), out, promise)
	}
	commit := func() error {
		if err := cl.Flush(ctx); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		if err := failed.Load(); err != nil {
			return *err
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	}

	lastCommit := time.Now()
	for len(remaining) > 0 {
		fetches := cl.PollRecords(ctx, maxPollRecords)
		if err := ctx.Err(); err != nil {
			return err
		}
		if fetches.IsClientClosed() {
			return errors.New("client closed while polling")
		}
		var errs []error
		fetches.EachError(func(t string, p int32, err error) {
			errs = append(errs, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				first.mark()
				if fn != nil {
					fn(r, emit)
				}
			}
			if n := len(p.Records); n > 0 && p.Records[n-1].Offset+1 >= remaining[p.Partition] {
				delete(remaining, p.Partition)
			}
		})
		if time.Since(lastCommit) >= spec.CommitInterval {
			if err := commit(); err != nil {
				return err
			}
			lastCommit = time.Now()
		}
		cl.AllowRebalance()
	}
	return commit()
}

// bounds returns the end offset of each input partition that has records
// to consume (the last stable offset: the end for a read_committed
// reader) and, if the spec has an output, its partition count.
func bounds(ctx context.Context, opts []kgo.Opt, spec childSpec) (remaining map[int32]int64, outPartitions int, err error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, spec.Input)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, 0, fmt.Errorf("list start offsets of %s: %w", spec.Input, err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, spec.Input)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, 0, fmt.Errorf("list end offsets of %s: %w", spec.Input, err)
	}
	remaining = map[int32]int64{}
	ends.Each(func(end kadm.ListedOffset) {
		if start, ok := starts.Lookup(end.Topic, end.Partition); !ok || start.Offset < end.Offset {
			remaining[end.Partition] = end.Offset
		}
	})
	if spec.Output == "" {
		return remaining, 0, nil
	}
	topics, err := adm.ListTopics(ctx, spec.Output)
	if err == nil {
		err = topics.Error()
	}
	if err != nil {
		return nil, 0, fmt.Errorf("describe %s: %w", spec.Output, err)
	}
	return remaining, len(topics[spec.Output].Partitions), nil
}
