// Package runner runs a samsa job: it is the job binary's command line
// ([Main]) and the engine behind it ([Runner]).
//
// # The job binary
//
// A job's main function is one line:
//
//	func main() { runner.Main(job) }
//
// The binary's commands are run (the default), describe, status, replay,
// state and create-topics; `<binary> help` lists every flag, its default,
// and the SAMSA_* environment variable that sets it. With no --brokers,
// run starts an embedded Kafka-protocol broker (package
// connectors/embedded) with its data under --state-dir, so a job runs on a
// fresh machine with nothing else installed; other instances join it with
// --brokers.
//
// # Scaling out
//
// Every instance of a job joins one consumer group named after the job.
// A balancer of samsa's own assigns whole tasks (partition p of every input
// topic of a sub-topology together), sticky and cooperative: when an
// instance joins or leaves, only the tasks that must move stop.
//
// # Delivery: at-least-once
//
// Each instance processes its tasks' records in offset order and writes
// outputs asynchronously. Every commit interval (and before giving up a
// task, and at shutdown) it waits until the brokers acknowledged every
// output, then commits the input offsets of the records that caused them.
// A crash therefore loses nothing; on restart, records after the last
// commit are processed again and their outputs written again.
//
// # State
//
// A task with stores opens them under --state-dir/tasks/<task> (Pebble) or
// in memory, and restores them from their changelogs before its first
// record: from the offset the local store reflects up to the changelog
// offset committed with the task's input offsets (commit metadata
// "samsa1;<store>=<offset>"). Changelog records past that offset, left by
// an instance that died before committing, are overwritten with the
// committed values at the next commit. A commit flushes each task's
// changed keys to the changelogs, waits for every write to be
// acknowledged, commits the input offsets with the changelog offsets, and
// then applies the changes to the local stores. The state therefore always
// reflects exactly the committed input, under at-least-once too.
//
// # Operations
//
// describe draws the topology (text, Mermaid, Graphviz DOT); status shows
// the job's group as the brokers see it: members, their tasks, lag and
// commit age per partition (commit metadata carries the commit's time);
// state reads a store from the local state directory or from a running
// instance. replay moves a stopped job's committed input offsets and,
// unless told to keep it, resets its state: it empties the changelogs of
// the replayed tasks' stores and the repartition topics they read, each
// first sealed with a record in an aborted transaction, so that every
// changelog then starts past any offset a local store can reflect and
// every local store, wherever it is, is wiped when its task next starts.
//
// # Metrics and health
//
// With --http-addr, the runner serves Prometheus metrics at /metrics
// (records in and out per topic and task, processing and commit latency,
// lag per partition, restore progress, store sizes, bad records, tasks,
// rebalances, broker reachability), /healthz, /readyz (joined, restored,
// brokers reachable), /status (a JSON view of tasks, lag and stores) and
// /state/{store}. While far behind, an instance logs its progress: lag,
// rate, time left.
//
// # Shutdown
//
// SIGINT or SIGTERM (or cancelling Run's context) shuts down in this
// order: stop polling; let in-flight records finish; flush outputs and
// changelogs; commit input offsets; apply the stores' changes; close tasks
// and their stores; leave the group. The process then
// exits 0.
//
// # Errors
//
// A record that fails (its key, value or timestamp does not decode, or a
// processor returns an error or panics) is handled by the job's policy for
// its kind, stream.ErrorPolicy, which Config.OnDeserializeError and
// Config.OnProcessError (--on-deserialize-error, --on-process-error)
// override. Under the default, fail, the task stops the instance: outputs
// of the records before it are flushed and their offsets committed, and
// Run returns an error naming the topic, partition and offset of the
// failing record, so a restart begins exactly there. Under skip the record
// is dropped; under dlq it is written to the dead-letter topic
// "<job>-dlq", which Run creates, with headers naming the error and the
// record's coordinates. Either way the record's own effects (store writes,
// emitted records) are undone first. Bad records are counted in
// samsa_bad_records_total and logged at most every 30 seconds per kind.
// Records operators drop on purpose (stream.Context.Dropped: late for
// their window, a null key) are counted in samsa_dropped_records_total by
// reason; Config.OnDropped (--on-dropped=dlq) also dead-letters them.
//
// At start Run reads the max.message.bytes of every topic the job writes:
// a record too large for its topic fails the record that emitted it, and
// the producer's batches stay within each topic's limit.
package runner
