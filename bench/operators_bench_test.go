package bench

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// The benchmarks push the pipeline command's workload through samsa's
// operators in-process, without a broker: records of 100-byte values over
// 10,000 keys, written to a topic of 4 partitions. They report records/s
// next to ns/op (one op is one record), so the figures compare directly
// with the pipeline command's.
//
//	go test ./bench -run '^$' -bench . -benchmem
//
// BenchmarkHandWritten is the floor: the work the hand-written loop does
// per record besides talking to Kafka. The Task benchmarks run a job's
// task as the runner does (package internal/engine) with outputs
// discarded: the cost samsa's operators add per record. The Driver
// benchmarks go through runnertest.Driver, which also keeps every record
// in its in-memory logs.

const (
	benchKeys       = 10_000
	benchValueSize  = 100
	benchValues     = 1024 // distinct values, reused round-robin
	benchPartitions = 4
	inTopic         = "in"
	outTopic        = "out"
)

// pipeline adds a job's operators between its input and its output.
type pipeline func(in stream.Stream[[]byte, []byte]) stream.Stream[[]byte, []byte]

var pipelines = []struct {
	name  string
	build pipeline
}{
	{"PassThrough", func(in stream.Stream[[]byte, []byte]) stream.Stream[[]byte, []byte] { return in }},
	{"MapValues", func(in stream.Stream[[]byte, []byte]) stream.Stream[[]byte, []byte] {
		return operators.MapValues(in, Upper)
	}},
	{"FilterMapValuesPeek", func(in stream.Stream[[]byte, []byte]) stream.Stream[[]byte, []byte] {
		kept := operators.Filter(in, func(_, v []byte) bool { return len(v) > 0 })
		upper := operators.MapValues(kept, Upper)
		return operators.Peek(upper, func(_, _ []byte) {})
	}},
}

// newJob returns the job in → build → out, with byte serdes on both ends
// as the pipeline command's samsa job has.
func newJob(build pipeline) *stream.Job {
	job := stream.NewJob("bench")
	in := stream.Input(job, inTopic, serde.Bytes, serde.Bytes)
	stream.Output(build(in), outTopic, serde.Bytes, serde.Bytes)
	return job
}

func reportRecordsPerSecond(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkHandWritten applies Upper and picks the output partition by
// key, as the pipeline command's hand-written loop does for each record.
func BenchmarkHandWritten(b *testing.B) {
	keys, values := Keys(benchKeys), Values(benchValues, benchValueSize)
	partitioner := kgo.StickyKeyPartitioner(nil).ForTopic(outTopic)
	in := &kgo.Record{Topic: inTopic}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		in.Key, in.Value = keys[i%len(keys)], values[i%len(values)]
		out := &kgo.Record{Topic: outTopic, Key: in.Key, Value: Upper(in.Value), Timestamp: in.Timestamp}
		out.Partition = int32(partitioner.Partition(out, benchPartitions))
	}
	reportRecordsPerSecond(b)
}

// discard is an engine.Emitter that drops what it is given.
type discard struct{}

func (discard) Emit(string, int32, stream.RawRecord) {}

// BenchmarkTask runs each pipeline's task directly, outputs discarded.
func BenchmarkTask(b *testing.B) {
	for _, p := range pipelines {
		b.Run(p.name, func(b *testing.B) {
			topo, err := newJob(p.build).Build()
			if err != nil {
				b.Fatal(err)
			}
			partitions := map[string]int32{inTopic: benchPartitions, outTopic: benchPartitions}
			task, err := engine.NewTask(context.Background(), topo, stream.TaskID{}, discard{}, partitions, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := task.Init(); err != nil {
				b.Fatal(err)
			}
			keys, values := Keys(benchKeys), Values(benchValues, benchValueSize)
			// A Kafka record always has a timestamp; a zero time is
			// negative in Kafka's milliseconds, which the task refuses.
			rec := stream.RawRecord{Topic: inTopic, Timestamp: time.UnixMilli(1_700_000_000_000)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rec.Key, rec.Value, rec.Offset = keys[i%len(keys)], values[i%len(values)], int64(i)
				if err := task.Process(rec); err != nil {
					b.Fatal(err)
				}
			}
			reportRecordsPerSecond(b)
		})
	}
}

// driverBatch is how many records a runnertest.Driver is given before it
// is replaced: it keeps every input and output record, so an unbounded
// run would measure a growing heap rather than the operators.
const driverBatch = 1 << 16

// BenchmarkDriver pipes each pipeline's records through a
// runnertest.Driver, each record to the partition its key hashes to.
func BenchmarkDriver(b *testing.B) {
	for _, p := range pipelines {
		b.Run(p.name, func(b *testing.B) {
			job := newJob(p.build)
			newDriver := func() *runnertest.Driver {
				d, err := runnertest.New(job,
					runnertest.Partitions(inTopic, benchPartitions),
					runnertest.Partitions(outTopic, benchPartitions))
				if err != nil {
					b.Fatal(err)
				}
				return d
			}
			d := newDriver()
			keys, values := Keys(benchKeys), Values(benchValues, benchValueSize)
			partitionOf := make([]int32, len(keys))
			for i, k := range keys {
				partitionOf[i] = d.PartitionFor(inTopic, k)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 && i%driverBatch == 0 {
					b.StopTimer()
					if err := d.Close(); err != nil {
						b.Fatal(err)
					}
					d = newDriver()
					b.StartTimer()
				}
				k := i % len(keys)
				rec := stream.RawRecord{Key: keys[k], Value: values[i%len(values)], Partition: partitionOf[k]}
				if err := d.Pipe(inTopic, rec); err != nil {
					b.Fatal(err)
				}
			}
			reportRecordsPerSecond(b)
		})
	}
}
