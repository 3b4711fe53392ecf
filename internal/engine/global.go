package engine

import (
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/stream"
)

// WithGlobalStores gives the task's processors the instance's global
// tables: Context.Store finds a global table's store by name when the task
// has no store of that name.
func WithGlobalStores(g *state.GlobalStores) Option {
	return func(o *options) { o.globals = g }
}

// WithTaskHeader stamps every record the task emits with the header
// stream.TaskHeader naming the task, replacing one the record carries
// (from an upstream task, through a repartition topic).
func WithTaskHeader() Option {
	return func(o *options) { o.taskHeader = true }
}

// stampTask returns headers with the task header set to task: a new
// slice, since the caller's may be shared with the input record.
func stampTask(headers []stream.Header, task []byte) []stream.Header {
	out := make([]stream.Header, 0, len(headers)+1)
	for _, h := range headers {
		if h.Key != stream.TaskHeader {
			out = append(out, h)
		}
	}
	return append(out, stream.Header{Key: stream.TaskHeader, Value: task})
}
