package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/bench"
	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// The join workload enriches each input record from a table: before the
// input, the harness seeds a second topic, the table, with one record per
// key (tableValue), keyed and partitioned like the input. Each output
// record is the input record under its key with the value
// input value|table value (joinValue).
//
//   - baseline: the hand-written loop, after reading the whole table topic
//     into a Go map (not timed: before the first input record);
//   - samsa: stream.TableInput of the table topic and
//     operators.JoinTable: the table's partitions are inputs of the tasks,
//     merged with the stream's by timestamp and kept in Pebble stores.

// tableValue is the table's value of key: about 60 bytes.
func tableValue(key []byte) []byte {
	return fmt.Appendf(nil, "profile of %s: plan pro, region eu-west, since 2021", key)
}

// joinValue is what both variants write for an input value and its key's
// table value.
func joinValue(v, tv []byte) []byte {
	out := make([]byte, 0, len(v)+1+len(tv))
	return append(append(append(out, v...), '|'), tv...)
}

// seedTable creates the table topic and writes a record per key to it,
// partitioned by key as the input is.
func (h *harness) seedTable(ctx context.Context) error {
	h.table = h.prefix + "-table"
	if err := h.createTopic(ctx, h.table); err != nil {
		return err
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(h.brokers...),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
		kgo.DefaultProduceTopic(h.table),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)
	if err != nil {
		return fmt.Errorf("seed table: client: %w", err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, k := range bench.Keys(h.cfg.keys) {
		recs = append(recs, &kgo.Record{Key: k, Value: tableValue(k)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("seed table %s: %w", h.table, err)
	}
	fmt.Fprintf(h.w, "table: %s records into %s\n", thousands(float64(len(recs))), h.table)
	return nil
}

// runBaselineJoin is the hand-written stream-table join: the table read
// into a map first, then the baseline's loop looking each record's key up
// in it.
func runBaselineJoin(ctx context.Context, spec childSpec, first *firstRecord) error {
	table, err := loadTable(ctx, spec)
	if err != nil {
		return err
	}
	return handWritten(ctx, spec, first, func(in *kgo.Record, emit func(*kgo.Record)) {
		if tv, ok := table[string(in.Key)]; ok {
			emit(&kgo.Record{Key: in.Key, Value: joinValue(in.Value, tv), Timestamp: in.Timestamp})
		}
	})
}

// loadTable reads the table topic to its end into a map.
func loadTable(ctx context.Context, spec childSpec) (map[string][]byte, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(spec.Brokers...), kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil))}
	remaining, _, err := bounds(ctx, opts, childSpec{Input: spec.Table})
	if err != nil {
		return nil, err
	}
	offsets := map[int32]kgo.Offset{}
	for p := range remaining {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{spec.Table: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("table client: %w", err)
	}
	defer cl.Close()
	table := map[string][]byte{}
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return nil, fmt.Errorf("read table %s: %w", spec.Table, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Value == nil {
				delete(table, string(r.Key))
			} else {
				table[string(r.Key)] = r.Value
			}
			if r.Offset+1 >= remaining[r.Partition] {
				delete(remaining, r.Partition)
			}
		})
	}
	return table, nil
}

// runSamsaJoin is the samsa stream-table join: Input and TableInput with
// byte serdes, JoinTable, Output.
func runSamsaJoin(ctx context.Context, spec childSpec, first *firstRecord) error {
	job := stream.NewJob(spec.Group)
	in := stream.Input(job, spec.Input, serde.Bytes, serde.Bytes)
	table := stream.TableInput(job, spec.Table, serde.Bytes, serde.Bytes)
	joined := operators.JoinTable(in, table, func(_, v, tv []byte) []byte {
		first.mark()
		return joinValue(v, tv)
	})
	stream.Output(joined, spec.Output, serde.Bytes, serde.Bytes)
	return runJob(ctx, spec, job, nil)
}

// checkJoin reads the total records of topic and checks that each is its
// key's input value joined with its key's table value.
func (h *harness) checkJoin(ctx context.Context, topic string, total int64) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(h.brokers...),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
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
	var read, bad int64
	var example []byte
	for read < total {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("read %s: %d of %d records: %w", topic, read, total, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			if !bytes.HasSuffix(r.Value, append([]byte{'|'}, tableValue(r.Key)...)) {
				bad++
				example = r.Value
			}
		})
	}
	if bad > 0 {
		return fmt.Errorf("%s: %d records are not joined with their key's table value, such as %q", topic, bad, example)
	}
	return nil
}
