package engine

import (
	"fmt"
	"slices"
	"strings"

	"github.com/samsa-go/samsa/stream"
)

// WithDroppedPolicy sets what the task does with input records its
// operators drop on purpose (stream.Context.Dropped): stream.PolicySkip
// (the default) only reports them to the Dropped hook; PolicyDeadLetter
// also writes each such record, once, to the dead-letter topic given to
// WithPolicy, with the reasons as its error.
func WithDroppedPolicy(p stream.ErrorPolicy) Option {
	return func(o *options) { o.onDropped = p }
}

// deadLetterDropped writes rec to the dead-letter topic if an operator
// dropped it while it was processed and the policy says so. It runs
// before the record's effects are released: if the write cannot be made,
// the record fails as a whole.
func (t *Task) deadLetterDropped(rec stream.RawRecord) error {
	if t.opts.onDropped != stream.PolicyDeadLetter || len(t.tc.drops) == 0 {
		return nil
	}
	reasons := slices.Compact(slices.Sorted(slices.Values(t.tc.drops)))
	err := t.errorAt(fmt.Errorf("dropped by an operator: %s", strings.Join(reasons, ", ")))
	return t.deadLetter(rec, stream.KindDropped, err)
}
