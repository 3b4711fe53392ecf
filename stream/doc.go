// Package stream is the graph of a samsa job: typed streams of records
// between input and output topics, and the interfaces processors and
// low-level tasks implement. It does no I/O; package runner runs a job.
//
// # Building a job
//
// A job starts with [NewJob]. [Input] reads a topic as a [Stream] of typed
// records, the functions of package operators transform streams, and
// [Output] writes a stream to a topic:
//
//	job := stream.NewJob("pageviews")
//	views := stream.Input(job, "pageviews", serde.String, serde.JSON[View]())
//	humans := operators.Filter(views, func(_ string, v View) bool { return !v.Bot })
//	stream.Output(humans, "human-views", serde.String, serde.JSON[View]())
//
// Building never panics on a mistake such as a bad topic name: mistakes
// are collected and returned by [Job.Build], which the runner calls
// before it starts.
//
// # Tasks and sub-topologies
//
// [Job.Build] splits the graph into sub-topologies: the connected parts of
// it. A task is one partition of one sub-topology ([TaskID]): it reads
// partition p of every input topic of its sub-topology, so those topics
// must have the same partition count (co-partitioning). Each task has its
// own instance of every processor, used by one goroutine at a time, and
// sees its records in offset order per input partition.
//
// A [GlobalTable] is the exception: every instance holds all of its
// topic, whatever tasks it runs, for lookups by any key (Kafka Streams'
// GlobalKTable, Samza's side inputs).
//
// # The low-level API
//
// A [Task] (Samza's StreamTask) sees raw records of its inputs and writes
// to any declared output with [Context.Emit]; add one with [AddTask]. A
// [Processor] is the same idea inside a typed graph; [Via] and [ViaN]
// insert one, [Via2] one with two inputs ([Processor2], for joins), and
// they are how package operators is built. Options say what a node
// needs: [WithStores], [WithTimers], and, for joins, [KeepsKey] and
// [CoPartitioned].
//
// # Determinism
//
// Operators must be deterministic: the same input log must give the same
// outputs. Emitted records are partitioned by key (Kafka's murmur2), and
// records without a key go to the emitting task's own partition, never to
// a random one.
//
// # Time
//
// A record's time is its Kafka timestamp, or, for an input declared with
// [EventTime], a time taken from its content. Each task keeps its stream
// time: the largest record time it has processed ([Context.StreamTime]).
// It is the task's only clock: windows close and stream-time timers
// ([StreamTimeTimer]) fire as it passes them, after the record that moved
// it, so they happen at the same point of the input on every run. The
// runner commits it with the task's offsets and restores it with its
// stores. Processors that act as stream time passes implement
// [StreamTimeHandler]; a task or processor that sets timers declares a
// timer store ([TaskSpec.Timers], [WithTimers]) and implements
// [TimerHandler]. Wall-clock timers ([WallClockTimer]) exist for work tied
// to real time; they are not deterministic.
//
// A task with several input partitions (a join, or a table and a stream)
// takes the record with the lowest Kafka timestamp next, waiting for a
// partition that is behind its end (see package runner): over a log
// written before the job reads it, the order, and so the stream time at
// each record, is a function of the log. While producers append as the job
// runs, records arriving at about the same time may interleave either way;
// a grace period covering that skew keeps it from making records late. The
// same holds for a repartition topic: each of its partitions holds the
// records of several upstream tasks in the order they were written, which
// depends on how fast each task ran.
//
// # Bad records
//
// A record whose key, value or timestamp does not decode
// ([*DeserializeError]), or whose processing returns an error or panics,
// is handled by the job's [ErrorPolicy] for its kind
// ([Job.OnDeserializeError], [Job.OnProcessError]): stop the job
// ([PolicyFail], the default), skip the record ([PolicySkip]), or write it
// to the job's dead-letter topic ([PolicyDeadLetter]; [ParseDeadLetter]
// reads what its headers say). Either way the record is atomic: its store
// writes are undone and what it emitted is not written. An error marked
// with [Fatal] stops the job whatever the policy. Operators that drop a
// record on purpose (a null key where a key is needed, a record too late
// for its window) report it with [Context.Dropped].
package stream
