package stream

import "fmt"

// DeserializeError is returned when an input record's key or value does not
// decode with the input's serde. It names the record so an operator can
// find it: topic, partition and offset.
type DeserializeError struct {
	Topic     string
	Partition int32
	Offset    int64
	Field     string // "key" or "value"
	Err       error
}

func (e *DeserializeError) Error() string {
	return fmt.Sprintf("stream: deserialize %s of %s/%d@%d: %v", e.Field, e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *DeserializeError) Unwrap() error { return e.Err }

// SerializeError is returned when an output record's key or value does not
// encode with the output's serde.
type SerializeError struct {
	Topic  string // the output topic
	Field  string // "key" or "value"
	Source string // the input record it came from, as topic/partition@offset
	Err    error
}

func (e *SerializeError) Error() string {
	from := ""
	if e.Source != "" {
		from = " (from " + e.Source + ")"
	}
	return fmt.Sprintf("stream: serialize %s for %s%s: %v", e.Field, e.Topic, from, e.Err)
}

func (e *SerializeError) Unwrap() error { return e.Err }

// ProcessError wraps an error a processor returned, with the input record
// being processed when it happened.
type ProcessError struct {
	Task      TaskID
	Topic     string
	Partition int32
	Offset    int64
	Err       error
}

func (e *ProcessError) Error() string {
	return fmt.Sprintf("stream: task %s: processing %s/%d@%d: %v", e.Task, e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *ProcessError) Unwrap() error { return e.Err }

// PanicError is a panic in user code, recovered. Its message is one line;
// the stack is kept for logs.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }
