package stream_test

import (
	"bytes"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Windowed keys come back from stores and topics: whatever the bytes,
// decoding does not panic, and what decodes encodes back to the same
// bytes.
func FuzzWindowedSerde(f *testing.F) {
	s := stream.WindowedSerde(serde.String)
	seed, _ := s.Encode(stream.Windowed[string]{Key: "page", Window: stream.Window{Start: time.UnixMilli(60_000), End: time.UnixMilli(120_000)}})
	f.Add(seed)
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := s.Decode(b)
		if err != nil {
			if len(b) >= 16 {
				t.Fatalf("Decode(%x): %v; any 16 bytes or more decode with serde.String", b, err)
			}
			return
		}
		out, err := s.Encode(w)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip %x -> %+v -> %x, %v", b, w, out, err)
		}
	})
}

// Dead-letter headers may be read from records anyone wrote: parsing
// never panics, and what parses describes itself the same way again.
func FuzzParseDeadLetter(f *testing.F) {
	f.Add("kaput", "process", "in", "3", "42", "1700000000123", "0_3", "", "trace", "t1")
	f.Add("", "deserialize", "", "-1", "x", "", "", "goroutine 1", "", "")
	f.Add("e", "k", "t", "2147483648", "9223372036854775807", "-62135596800000", "t", "s", "samsa.dlq.topic", "again")
	f.Fuzz(func(t *testing.T, errText, kind, topic, partition, offset, ts, task, stack, extraKey, extraValue string) {
		hs := []stream.Header{
			{Key: stream.HeaderDLQError, Value: []byte(errText)},
			{Key: stream.HeaderDLQKind, Value: []byte(kind)},
			{Key: stream.HeaderDLQTopic, Value: []byte(topic)},
			{Key: stream.HeaderDLQPartition, Value: []byte(partition)},
			{Key: stream.HeaderDLQOffset, Value: []byte(offset)},
			{Key: stream.HeaderDLQTimestamp, Value: []byte(ts)},
			{Key: stream.HeaderDLQTask, Value: []byte(task)},
		}
		if stack != "" {
			hs = append(hs, stream.Header{Key: stream.HeaderDLQStack, Value: []byte(stack)})
		}
		hs = append(hs, stream.Header{Key: extraKey, Value: []byte(extraValue)})
		d, err := stream.ParseDeadLetter(hs)
		if err != nil {
			return
		}
		again := []stream.Header{
			{Key: stream.HeaderDLQError, Value: []byte(d.Error)},
			{Key: stream.HeaderDLQKind, Value: []byte(d.Kind)},
			{Key: stream.HeaderDLQTopic, Value: []byte(d.Topic)},
			{Key: stream.HeaderDLQPartition, Value: strconv.AppendInt(nil, int64(d.Partition), 10)},
			{Key: stream.HeaderDLQOffset, Value: strconv.AppendInt(nil, d.Offset, 10)},
			{Key: stream.HeaderDLQTimestamp, Value: strconv.AppendInt(nil, d.Timestamp.UnixMilli(), 10)},
			{Key: stream.HeaderDLQTask, Value: []byte(d.Task)},
		}
		if d.Stack != "" {
			again = append(again, stream.Header{Key: stream.HeaderDLQStack, Value: []byte(d.Stack)})
		}
		again = append(again, d.Headers...)
		d2, err := stream.ParseDeadLetter(again)
		if err != nil {
			t.Fatalf("%+v does not parse back: %v", d, err)
		}
		if d2.Error != d.Error || d2.Kind != d.Kind || d2.Topic != d.Topic || d2.Partition != d.Partition || d2.Offset != d.Offset ||
			!d2.Timestamp.Equal(d.Timestamp) || d2.Task != d.Task || d2.Stack != d.Stack ||
			!slices.EqualFunc(d2.Headers, d.Headers, func(a, b stream.Header) bool { return a.Key == b.Key && bytes.Equal(a.Value, b.Value) }) {
			t.Fatalf("%+v parses back as %+v", d, d2)
		}
	})
}

// RecordBatchSize is what a broker compares with max.message.bytes: it
// must never be less than the real size of a batch of one record, or a
// record the runner let through would be refused, and it should not be
// much more, or records a topic accepts would be refused.
func FuzzRecordBatchSize(f *testing.F) {
	f.Add([]byte("k"), []byte("v"), "h", []byte("x"), uint8(1), false)
	f.Add([]byte(nil), []byte(nil), "", []byte(nil), uint8(0), true)
	f.Add(bytes.Repeat([]byte("k"), 300), bytes.Repeat([]byte("v"), 70000), "trace", bytes.Repeat([]byte("h"), 200), uint8(9), false)
	f.Fuzz(func(t *testing.T, key, value []byte, hkey string, hvalue []byte, nh uint8, nulls bool) {
		if nulls {
			key, value = nil, nil
		}
		var headers []stream.Header
		var kheaders []kmsg.Header
		for i := range int(nh % 16) {
			k := hkey + strconv.Itoa(i)
			headers = append(headers, stream.Header{Key: k, Value: hvalue})
			kheaders = append(kheaders, kmsg.Header{Key: k, Value: hvalue})
		}
		rec := kmsg.Record{OffsetDelta: 0, TimestampDelta64: 0, Key: key, Value: value, Headers: kheaders}
		body := rec.AppendTo(nil)
		rec.Length = int32(len(body) - 1) // the zero Length took one byte
		batch := kmsg.RecordBatch{Magic: 2, NumRecords: 1, Records: rec.AppendTo(nil)}
		actual := len(batch.AppendTo(nil))
		bound := stream.RecordBatchSize(key, value, headers)
		if bound < actual {
			t.Fatalf("RecordBatchSize = %d, but the batch is %d bytes", bound, actual)
		}
		if slack := 29 + 8*len(headers); bound > actual+slack {
			t.Fatalf("RecordBatchSize = %d, more than %d over the batch's %d bytes", bound, slack, actual)
		}
	})
}
