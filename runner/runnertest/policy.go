package runnertest

import (
	"maps"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/stream"
)

// OnDeserializeError overrides the job's policy for records that do not
// decode, as the runner's --on-deserialize-error flag does.
func OnDeserializeError(p stream.ErrorPolicy) Option {
	return func(d *Driver) { d.policy.deserialize = p }
}

// OnDropped overrides the job's policy for records operators drop on
// purpose, as the runner's --on-dropped flag does.
func OnDropped(p stream.ErrorPolicy) Option {
	return func(d *Driver) { d.policy.onDropped = p }
}

// OnProcessError overrides the job's policy for records whose processing
// fails, as the runner's --on-process-error flag does.
func OnProcessError(p stream.ErrorPolicy) Option {
	return func(d *Driver) { d.policy.process = p }
}

// MaxMessageBytes sets the largest record batch topic accepts, as a
// broker's max.message.bytes does: a processor emitting a larger record,
// or putting a value too large for its store's changelog topic, fails on
// that record. By default the driver's topics have no limit.
func MaxMessageBytes(topic string, n int) Option {
	return func(d *Driver) { d.policy.limits[topic] = n }
}

// driverPolicy is what the driver does with bad records.
type driverPolicy struct {
	deserialize, process stream.ErrorPolicy
	onDropped            stream.ErrorPolicy
	limits               map[string]int
	bad                  []BadRecord
	dropped              map[string]int
}

// BadRecord is an input record that failed and was skipped or
// dead-lettered by the job's policy.
type BadRecord struct {
	Kind   string             // stream.KindDeserialize or stream.KindProcess
	Policy stream.ErrorPolicy // stream.PolicySkip or stream.PolicyDeadLetter
	Record stream.RawRecord
	Err    error // a *stream.ProcessError
}

// BadRecords returns the records skipped or dead-lettered so far, in the
// order they were processed. Dead-lettered records are also in the
// job's dead-letter topic (Topology().DeadLetterTopic()), one partition
// per input partition number.
func (d *Driver) BadRecords() []BadRecord { return append([]BadRecord(nil), d.policy.bad...) }

// Dropped returns how many records operators dropped on purpose, by
// reason (see stream.Context.Dropped).
func (d *Driver) Dropped() map[string]int { return maps.Clone(d.policy.dropped) }

// resolvePolicy fills in the job's defaults and, if records may be
// dead-lettered, adds the dead-letter topic.
func (d *Driver) resolvePolicy() {
	if d.policy.deserialize == "" {
		d.policy.deserialize = d.topo.OnDeserializeError()
	}
	if d.policy.process == "" {
		d.policy.process = d.topo.OnProcessError()
	}
	if d.policy.onDropped == "" {
		d.policy.onDropped = d.topo.OnDropped()
	}
	if d.policy.deserialize == stream.PolicyDeadLetter || d.policy.process == stream.PolicyDeadLetter || d.policy.onDropped == stream.PolicyDeadLetter {
		if _, ok := d.partitions[d.topo.DeadLetterTopic()]; !ok {
			d.partitions[d.topo.DeadLetterTopic()] = engine.DeadLetterPartitions(d.topo, d.partitions)
		}
	}
}

// taskOptions are the engine options of every task of the driver.
func (d *Driver) taskOptions() []engine.Option {
	dlq := d.topo.DeadLetterTopic()
	return []engine.Option{
		engine.WithPolicy(d.policy.deserialize, d.policy.process, dlq, d.partitions[dlq]),
		engine.WithDroppedPolicy(d.policy.onDropped),
		engine.WithRecordLimits(d.policy.limits),
		engine.WithHooks(engine.Hooks{
			BadRecord: func(b engine.BadRecord) {
				d.policy.bad = append(d.policy.bad, BadRecord{Kind: b.Kind, Policy: b.Policy, Record: b.Record, Err: b.Err})
			},
			Dropped: func(dr engine.Dropped) { d.policy.dropped[dr.Reason]++ },
		}),
	}
}
