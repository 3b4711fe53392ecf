// Package serde converts typed keys and values to and from the bytes of
// Kafka records.
//
// # Built in
//
// [String], [Bytes] and [Int64] match the wire formats of Kafka's own
// StringSerializer, ByteArraySerializer and LongSerializer, so records
// written by samsa read correctly in kcat, the Java clients and Kafka
// Streams. [JSON] covers structured values.
//
// # Your own
//
// Implement [Serde] or wrap two functions with [Funcs]. A serde must be
// deterministic: samsa's replay guarantee (same log in, same bytes out)
// depends on it.
package serde
