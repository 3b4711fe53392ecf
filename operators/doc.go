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
// # Errors and panics
//
// The functions given to the stateless operators do not return errors:
// they are pure transformations. Work that can fail belongs in [Process].
// A panic in any of them is recovered by the runner and stops the task
// with an error naming the input record, like a returned error.
package operators
