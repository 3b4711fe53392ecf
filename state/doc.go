// Package state keeps the local state of a job's tasks: key-value stores
// next to the computation, made durable by changelog topics.
//
// # Layers
//
// A task's stores ([TaskStores]) are a write-back cache in front of a
// [Backend]: Pebble on local disk (package pebblestore, the default) or
// memory (package memstore). Processors see each store as a
// [stream.Store] of bytes; [Typed] gives a typed view through serdes.
//
// # Durability
//
// Every change is written to the store's changelog topic,
// "<job>-<store>-changelog", one partition per task, compacted. Changes
// wait in the cache until the task commits: then each changed key is
// written to the changelog once (repeated updates of a key within a
// commit interval collapse into one record), the runner commits the input
// offsets together with the changelog offsets they correspond to, and only
// then are the changes applied to the backend, atomically with the
// changelog offset they reflect. The backend therefore never holds the
// effect of an uncommitted input, and a restart restores only the
// changelog records between the backend's offset and the committed one.
//
// # Concurrency and memory
//
// Stores belong to one task and are used by one goroutine at a time.
// Values returned by Get and by iterators are copies the caller keeps.
package state
