// Package operators adds processing steps to a job: generic functions that
// take a [stream.Stream] and return the streams they produce.
//
// # Stateless operators
//
// [Map], [MapValues], [Filter], [FilterNot], [FlatMap], [FlatMapValues],
// [Branch], [Merge] and [Peek] transform records one at a time. Their
// functions must be deterministic and free of side effects other than
// [Peek]'s: samsa's replay guarantee (the same input log gives the same
// output) rests on it. A record keeps its timestamp, headers and source
// coordinates through every operator.
//
// # Custom processors
//
// [Process] inserts a processor of your own, created once per task, that
// may keep per-task state, forward any number of records, or fail with an
// error that stops the task at the record that caused it.
//
// # Windows
//
// [WindowedAggregate], [WindowedReduce] and [WindowedCount] aggregate a
// [Grouped] stream per key and per fixed-size window of event time
// ([Tumbling], [Hopping]); [SessionAggregate], [SessionReduce] and
// [SessionCount] per session ([Sessions]). Their result is a table keyed
// by [stream.Windowed] keys. Windows follow the task's stream time (see
// package stream): a window closes once stream time passes its end plus
// its grace period; a record that arrives for closed windows only is late,
// dropped, and counted (stream.Context.Dropped, reason "late"); a window
// is purged from its store and, with a tombstone, from the store's
// changelog once stream time passes its retention. Results are forwarded
// on every update, or with EmitFinal once per window, when it closes.
// Because stream time is a function of the input log, so are the results:
// a replay gives the same ones, in the same order per task. Windows that
// close together are emitted in order of start, then key.
//
// The window stores' layouts are those of package state/window: start
// first for fixed-size windows, indexed by key and by end for sessions.
//
// # Deduplication
//
// [Dedupe] and [DedupeBy] drop records whose key, or an ID taken from
// them, passed within a span of event time, remembering IDs in a store
// until stream time moves past their span.
//
// # Joins
//
// [JoinTable] and [LeftJoinTable] join each record of a stream with the
// value its key has in a [stream.Table] when the record is processed;
// [JoinTables], [LeftJoinTables] and [OuterJoinTables] join two tables into
// a third, kept in a store of its own, that changes with either. [Join],
// [LeftJoin] and [OuterJoin] join two streams within [JoinWindows] of
// event time: both sides wait in one store (see [Buffers]) until no record
// of the other side can join them any more; the unmatched records of a
// left or outer join are emitted once their window has closed in the
// join's stream time, in order of closing time, and late records are
// dropped and counted. These joins match keys within a task, so their
// inputs must be co-partitioned: Job.Build refuses inputs whose keys a
// node may have changed since their topic (re-key with [KeyBy]) or whose
// topics' key serdes differ, and the runner refuses topics with different
// partition counts. A task merges its input partitions by timestamp (see
// package runner), so a join's output is a function of its input logs.
//
// [JoinGlobal] and [LeftJoinGlobal] look records up in a
// [stream.GlobalTable] by a key taken from each record: no
// co-partitioning, and the table as the instance has read it so far.
//
// # Errors and panics
//
// The functions given to the stateless operators do not return errors:
// they are pure transformations. Work that can fail belongs in [Process].
// A panic in any of them is recovered by the runner and stops the task
// with an error naming the input record, like a returned error.
package operators
