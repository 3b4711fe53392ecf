package stream

import (
	"fmt"
	"time"
)

// Record is one key/value pair flowing through a job, with its timestamp
// and headers. Records read from a topic also carry their source
// coordinates (Topic, Partition, Offset); operators keep them, so a record
// deep in a pipeline still says which input record caused it.
type Record[K, V any] struct {
	Key       K
	Value     V
	Timestamp time.Time
	Headers   []Header

	// Topic, Partition and Offset locate the input record this record came
	// from. They are informational: emission ignores them.
	Topic     string
	Partition int32
	Offset    int64
}

// RawRecord is a record of bytes, as the low-level [Task] sees it and as
// records are written to topics. A nil Key or Value is a Kafka null.
type RawRecord = Record[[]byte, []byte]

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// TaskID names a task: one partition of one sub-topology. Partition p of
// every input topic of sub-topology S is processed by task S_p.
type TaskID struct {
	Subtopology int
	Partition   int32
}

func (t TaskID) String() string { return fmt.Sprintf("%d_%d", t.Subtopology, t.Partition) }

// KeyValue is a key and a value, as returned by flat-mapping functions.
type KeyValue[K, V any] struct {
	Key   K
	Value V
}

// KV returns a KeyValue.
func KV[K, V any](k K, v V) KeyValue[K, V] { return KeyValue[K, V]{k, v} }

// TaskHeader is the header naming the task that wrote a record, as
// "<sub-topology>_<partition>" (see [TaskID]), when the runner stamps
// outputs (its --task-header flag; runnertest.TaskHeader). It tells which
// task produced each record of a topic, so that runs over the same input
// can be compared task by task.
const TaskHeader = "samsa-task"
