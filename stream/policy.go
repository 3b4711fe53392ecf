package stream

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrorPolicy says what a job does with an input record it cannot
// process: one whose key, value or timestamp does not decode (see
// [Job.OnDeserializeError]), or one whose processing returns an error or
// panics (see [Job.OnProcessError]).
//
// Whatever the policy, a record is atomic: when its processing fails, the
// store writes it made are undone and the records it emitted are never
// written, so a skipped record leaves no trace but a count, a dead-lettered
// one only its dead-letter record, and a record that stops the job is
// processed afresh when the job restarts. Effects outside Kafka and the
// task's stores (a call to another service, fields of the processor
// itself) cannot be undone.
type ErrorPolicy string

const (
	// PolicyFail stops the job with an error naming the record's topic,
	// partition and offset. Everything before the record is committed, so
	// a restart begins at that record. The default.
	PolicyFail ErrorPolicy = "fail"
	// PolicySkip drops the record and carries on. Skips are counted by
	// kind (metric samsa_bad_records_total) and logged with a rate limit.
	PolicySkip ErrorPolicy = "skip"
	// PolicyDeadLetter writes the record as it was read (key, value,
	// headers, timestamp) to the job's dead-letter topic "<job>-dlq", with
	// headers saying what went wrong and where it came from (see
	// [DeadLetter]), and carries on. The write is part of the commit like
	// any output: under exactly-once it is in the same transaction.
	PolicyDeadLetter ErrorPolicy = "dlq"
)

// ParseErrorPolicy returns the policy named s: "fail", "skip" or "dlq".
func ParseErrorPolicy(s string) (ErrorPolicy, error) {
	switch p := ErrorPolicy(s); p {
	case PolicyFail, PolicySkip, PolicyDeadLetter:
		return p, nil
	}
	return "", fmt.Errorf("stream: error policy %q: want fail, skip or dlq", s)
}

// OnDeserializeError sets the job's default policy for input records
// whose key, value or timestamp cannot be decoded ([*DeserializeError]).
// The runner's --on-deserialize-error flag overrides it. Default:
// [PolicyFail].
func (j *Job) OnDeserializeError(p ErrorPolicy) {
	if _, err := ParseErrorPolicy(string(p)); err != nil {
		j.errorf("stream: OnDeserializeError: %w", err)
		return
	}
	j.policy.deserialize = p
}

// OnProcessError sets the job's default policy for records whose
// processing returns an error or panics, including records whose outputs
// do not encode or are larger than their topic accepts. The runner's
// --on-process-error flag overrides it. Default: [PolicyFail].
//
// Some errors stop the job whatever the policy: those marked with
// [Fatal], failures of the task's stores, and errors of a task that is
// shutting down.
func (j *Job) OnProcessError(p ErrorPolicy) {
	if _, err := ParseErrorPolicy(string(p)); err != nil {
		j.errorf("stream: OnProcessError: %w", err)
		return
	}
	j.policy.process = p
}

// errorPolicies are a job's default error policies; empty means fail.
type errorPolicies struct {
	deserialize, process ErrorPolicy
	dropped              ErrorPolicy // see dropped.go
}

// OnDeserializeError returns the job's policy for records that do not
// decode: what [Job.OnDeserializeError] set, or [PolicyFail].
func (t *Topology) OnDeserializeError() ErrorPolicy {
	return orDefault(t.job.policy.deserialize, PolicyFail)
}

// OnProcessError returns the job's policy for records whose processing
// fails: what [Job.OnProcessError] set, or [PolicyFail].
func (t *Topology) OnProcessError() ErrorPolicy {
	return orDefault(t.job.policy.process, PolicyFail)
}

func orDefault(p, def ErrorPolicy) ErrorPolicy {
	if p == "" {
		return def
	}
	return p
}

// DeadLetterTopic returns the job's dead-letter topic, "<job>-dlq", which
// the runner creates when a policy is [PolicyDeadLetter].
func (t *Topology) DeadLetterTopic() string { return t.job.name + "-dlq" }

// ErrFatal is matched (with errors.Is) by errors that stop the job
// whatever its error policy: see [Fatal].
var ErrFatal = errors.New("stream: fatal")

// Fatal marks err as a failure that skipping the record would not cure,
// such as a service the processor depends on being down: the job stops
// on it even when its policy would skip or dead-letter the record, and
// the record is processed again when the job restarts. Fatal(nil) is nil.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return fatalError{err}
}

type fatalError struct{ err error }

func (e fatalError) Error() string        { return e.err.Error() }
func (e fatalError) Unwrap() error        { return e.err }
func (e fatalError) Is(target error) bool { return target == ErrFatal }

// RecordTooLargeError is returned when a record is larger than the topic
// it is written to accepts: an output emitted by a processor, or a store
// value its changelog topic could not hold. The limit is the topic's
// max.message.bytes (and the producer's batch limit), measured as a
// record batch of one record, as the broker measures it.
type RecordTooLargeError struct {
	Topic string
	Size  int // the record as a batch of one, in bytes
	Max   int
}

func (e *RecordTooLargeError) Error() string {
	return fmt.Sprintf("stream: a record of %d bytes is larger than topic %s accepts (%d bytes; its max.message.bytes)", e.Size, e.Topic, e.Max)
}

// RecordBatchSize returns the size of a Kafka record batch (v2, the
// format of Kafka 0.11 and later) holding one uncompressed record with
// this key, value and headers, a bound that assumes the widest varints.
// Brokers compare it with a topic's max.message.bytes.
func RecordBatchSize(key, value []byte, headers []Header) int {
	const (
		batchHeader = 61 // base offset ... record count
		varint      = 5  // a varint of an int32, at its widest
		varlong     = 10 // a varint of an int64, at its widest
	)
	// length, attributes, timestamp delta, offset delta, key, value,
	// header count.
	n := batchHeader + varint + 1 + varlong + varint + varint + len(key) + varint + len(value) + varint
	for _, h := range headers {
		n += varint + len(h.Key) + varint + len(h.Value)
	}
	return n
}

// Headers of a dead-letter record. Its key, value, timestamp and other
// headers are those of the input record as it was read.
const (
	// HeaderDLQError is the error, as text (at most 4 KiB).
	HeaderDLQError = "samsa.dlq.error"
	// HeaderDLQKind is "deserialize", "process" or "dropped".
	HeaderDLQKind = "samsa.dlq.kind"
	// HeaderDLQTopic, HeaderDLQPartition and HeaderDLQOffset locate the
	// input record (partition and offset in decimal).
	HeaderDLQTopic     = "samsa.dlq.topic"
	HeaderDLQPartition = "samsa.dlq.partition"
	HeaderDLQOffset    = "samsa.dlq.offset"
	// HeaderDLQTimestamp is the input record's timestamp, in decimal
	// milliseconds since the Unix epoch.
	HeaderDLQTimestamp = "samsa.dlq.timestamp"
	// HeaderDLQTask is the task that processed it, as "<sub-topology>_<partition>".
	HeaderDLQTask = "samsa.dlq.task"
	// HeaderDLQStack is the stack of a panic (at most 8 KiB); absent for
	// other errors.
	HeaderDLQStack = "samsa.dlq.stack"
)

// The kinds of bad records, as in HeaderDLQKind and metrics.
const (
	KindDeserialize = "deserialize"
	KindProcess     = "process"
	KindDropped     = "dropped" // dropped on purpose by an operator: see Job.OnDropped
)

// DeadLetter is what a dead-letter record says about the record it
// carries. [ParseDeadLetter] reads it from the record's headers.
type DeadLetter struct {
	Error     string
	Kind      string // KindDeserialize, KindProcess or KindDropped
	Topic     string
	Partition int32
	Offset    int64
	Timestamp time.Time
	Task      string
	Stack     string // for panics
	// Headers are the input record's own headers, without the above.
	Headers []Header
}

// ParseDeadLetter reads a dead-letter record's headers. It returns an
// error naming the first header that is missing or malformed.
func ParseDeadLetter(headers []Header) (DeadLetter, error) {
	var d DeadLetter
	seen := map[string]bool{}
	for _, h := range headers {
		v := string(h.Value)
		var err error
		switch h.Key {
		case HeaderDLQError:
			d.Error = v
		case HeaderDLQKind:
			d.Kind = v
		case HeaderDLQTopic:
			d.Topic = v
		case HeaderDLQPartition:
			var p int64
			p, err = strconv.ParseInt(v, 10, 32)
			d.Partition = int32(p)
		case HeaderDLQOffset:
			d.Offset, err = strconv.ParseInt(v, 10, 64)
		case HeaderDLQTimestamp:
			var ms int64
			ms, err = strconv.ParseInt(v, 10, 64)
			d.Timestamp = time.UnixMilli(ms)
		case HeaderDLQTask:
			d.Task = v
		case HeaderDLQStack:
			d.Stack = v
		default:
			d.Headers = append(d.Headers, h)
			continue
		}
		if err != nil {
			return DeadLetter{}, fmt.Errorf("stream: dead-letter header %s=%q: %w", h.Key, v, err)
		}
		if seen[h.Key] {
			return DeadLetter{}, fmt.Errorf("stream: dead-letter header %s appears twice", h.Key)
		}
		seen[h.Key] = true
	}
	for _, k := range []string{HeaderDLQError, HeaderDLQKind, HeaderDLQTopic, HeaderDLQPartition, HeaderDLQOffset, HeaderDLQTimestamp, HeaderDLQTask} {
		if !seen[k] {
			return DeadLetter{}, fmt.Errorf("stream: not a dead-letter record: no %s header", k)
		}
	}
	return d, nil
}
