package stream

import (
	"fmt"
	"slices"
	"strings"

	"github.com/samsa-go/samsa/stream/serde"
)

// GlobalTable is a table of which every instance of the job holds a full
// copy: all partitions of its topic, not one partition per task (Kafka
// Streams' GlobalKTable, Samza's side inputs). It is for reference data
// that is small enough to copy and is not partitioned like the streams
// that look it up: join a stream with it through a key extracted from
// each record (operators.JoinGlobal), with no repartitioning.
//
// The runner reads the topic to its end before the instance processes
// anything, keeping the copy in a local store (under the state
// directory, so a restart reads only what is new), and goes on reading it
// while the job runs: a lookup sees the table as the instance has read it
// so far. Updates to a global table are therefore not ordered with the
// records that look it up; a join with reference data written before the
// stream's records is deterministic, one with a table that changes while
// the job runs is not (see the README's notes on determinism).
type GlobalTable[K, V any] struct {
	store string
	key   serde.Serde[K]
	value serde.Serde[V]
}

// globalDecl is a global table of a job.
type globalDecl struct {
	spec GlobalSpec
}

// GlobalSpec describes a global table of a job, for runners.
type GlobalSpec struct {
	// Store names the table's store, through which processors read it
	// with [Context.Store]. It is the topic's name.
	Store string
	// Topic is the topic the table holds: its only source and its
	// changelog.
	Topic string
}

// GlobalTableInput reads topic as a global table: each record sets its
// key's value, a tombstone (null value) deletes the key. The topic should
// be compacted. It must not also be an input of the job.
func GlobalTableInput[K, V any](j *Job, topic string, key serde.Serde[K], value serde.Serde[V]) GlobalTable[K, V] {
	g := GlobalTable[K, V]{store: topic, key: key, value: value}
	if !j.checkOpen("global table " + topic) {
		return g
	}
	if err := validName(topic); err != nil {
		j.errorf("stream: global table: %w", err)
		return g
	}
	if key == nil || value == nil {
		j.errorf("stream: global table %q: nil serde", topic)
		return g
	}
	if _, ok := j.globals[topic]; ok {
		j.errorf("stream: topic %q is read as a global table twice; read it once and share the table", topic)
		return g
	}
	if j.globals == nil {
		j.globals = map[string]*globalDecl{}
	}
	j.globals[topic] = &globalDecl{spec: GlobalSpec{Store: topic, Topic: topic}}
	return g
}

// Store returns the name of the table's store.
func (g GlobalTable[K, V]) Store() string { return g.store }

// KeySerde and ValueSerde return the table's serdes.
func (g GlobalTable[K, V]) KeySerde() serde.Serde[K]   { return g.key }
func (g GlobalTable[K, V]) ValueSerde() serde.Serde[V] { return g.value }

// checkGlobals reports global tables whose topic is also read as a stream
// or table, or whose store name is taken by a task's store.
func (j *Job) checkGlobals() []error {
	var errs []error
	for _, name := range sortedKeys(j.globals) {
		if src, ok := j.sources[name]; ok {
			errs = append(errs, fmt.Errorf("stream: topic %q is read both as a global table and by %s; a topic is read one way", name, src.node.name))
		}
		if d, ok := j.stores[name]; ok {
			errs = append(errs, fmt.Errorf("stream: global table %q: a store of that name is declared by %s", name, d.node.name))
		}
	}
	return errs
}

// GlobalTables returns the job's global tables, sorted by store name.
func (t *Topology) GlobalTables() []GlobalSpec {
	out := make([]GlobalSpec, 0, len(t.job.globals))
	for _, name := range sortedKeys(t.job.globals) {
		out = append(out, t.job.globals[name].spec)
	}
	return out
}

// GlobalTable returns the global table whose store is name.
func (t *Topology) GlobalTable(name string) (GlobalSpec, bool) {
	d, ok := t.job.globals[name]
	if !ok {
		return GlobalSpec{}, false
	}
	return d.spec, true
}

// globalTopics returns the topics of the job's global tables, sorted.
func (j *Job) globalTopics() []string {
	var out []string
	for _, d := range j.globals {
		out = append(out, d.spec.Topic)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// globalSummary describes the global tables for Topology.String.
func (t *Topology) globalSummary() string {
	topics := t.job.globalTopics()
	if len(topics) == 0 {
		return ""
	}
	return "  global tables: " + strings.Join(topics, ", ") + "\n"
}
