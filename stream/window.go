package stream

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/samsa-go/samsa/stream/serde"
)

// Window is a span of event time. For fixed-size windows (tumbling,
// hopping) it is [Start, End): End is the first instant after the window.
// For session windows Start and End are the timestamps of the session's
// first and last records, both included.
type Window struct {
	Start, End time.Time
}

// String returns the window as an ISO 8601 interval, "start/end", in UTC.
func (w Window) String() string {
	return w.Start.UTC().Format(time.RFC3339Nano) + "/" + w.End.UTC().Format(time.RFC3339Nano)
}

// Windowed is a key together with a window: the key of a windowed
// aggregation's results.
type Windowed[K any] struct {
	Key    K
	Window Window
}

// WindowedSerde returns the serde of windowed keys: the key's bytes, then
// the window's start and end in milliseconds since the Unix epoch, each 8
// bytes big-endian (Kafka Streams' session-windowed keys are the same with
// end and start swapped). Records keyed so are partitioned by key and
// window together; to partition a windowed result by its key alone,
// re-key it (operators.Map) before writing it.
func WindowedSerde[K any](key serde.Serde[K]) serde.Serde[Windowed[K]] {
	return windowedSerde[K]{key}
}

type windowedSerde[K any] struct{ key serde.Serde[K] }

func (s windowedSerde[K]) Encode(w Windowed[K]) ([]byte, error) {
	kb, err := s.key.Encode(w.Key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(kb)+16)
	out = append(out, kb...)
	out = binary.BigEndian.AppendUint64(out, uint64(w.Window.Start.UnixMilli()))
	return binary.BigEndian.AppendUint64(out, uint64(w.Window.End.UnixMilli())), nil
}

func (s windowedSerde[K]) Decode(b []byte) (Windowed[K], error) {
	if len(b) < 16 {
		return Windowed[K]{}, fmt.Errorf("windowed key of %d bytes: want the key and 16 bytes of window", len(b))
	}
	n := len(b) - 16
	k, err := s.key.Decode(b[:n:n])
	if err != nil {
		return Windowed[K]{}, err
	}
	return Windowed[K]{Key: k, Window: Window{
		Start: time.UnixMilli(int64(binary.BigEndian.Uint64(b[n:]))),
		End:   time.UnixMilli(int64(binary.BigEndian.Uint64(b[n+8:]))),
	}}, nil
}
