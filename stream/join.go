package stream

import (
	"fmt"
	"reflect"
	"strings"
)

// Processor2 handles the records of a node with two input streams, such as
// a join, in one task: ProcessLeft the records of the first stream,
// ProcessRight those of the second, one record at a time. Like a
// [Processor] it is created per task and used by one goroutine at a time,
// and may implement [Initializer], [Closer] and [Flusher].
type Processor2[K1, V1, K2, V2 any] interface {
	ProcessLeft(ctx Context, rec Record[K1, V1]) error
	ProcessRight(ctx Context, rec Record[K2, V2]) error
}

// Via2 adds a node with two input streams, left and right, and returns the
// stream of what its processor forwards. It is [Via] for joins:
// newProcessor is called once per task with the processor to forward to.
// The two inputs end up in one sub-topology, so a task sees partition p of
// both; with [CoPartitioned], Job.Build checks that both are partitioned
// by the same key bytes.
func Via2[K1, V1, K2, V2, K3, V3 any](left Stream[K1, V1], right Stream[K2, V2], kind string, newProcessor func(next Processor[K3, V3]) Processor2[K1, V1, K2, V2], opts ...NodeOption) Stream[K3, V3] {
	lp, rp := left.port(), right.port()
	j := lp.job
	op := j.addNode(kind, lp.node, rp.node)
	var o nodeOptions
	for _, opt := range opts {
		opt(&o)
	}
	o.apply(op)
	out := newStream[K3, V3](j, op)
	if !j.checkOpen(kind) {
		return out
	}
	if rp.job != j {
		j.errorf("stream: %s: inputs from different jobs (%q and %q)", op.name, j.name, rp.job.name)
		return out
	}
	for _, spec := range o.stores {
		j.addStore(spec, op)
	}
	for _, name := range o.timers {
		j.addStore(StoreSpec{Name: name}, op)
		op.timers = append(op.timers, name)
	}
	if newProcessor == nil {
		j.errorf("stream: %s: nil processor constructor", op.name)
		return out
	}
	build := func(b *builder) Processor2[K1, V1, K2, V2] {
		if v, ok := b.memo[op]; ok {
			return v.(Processor2[K1, V1, K2, V2])
		}
		p := newProcessor(out.p.build(b))
		b.memo[op] = p
		b.track(p)
		b.own(op, p)
		return p
	}
	lp.consumers = append(lp.consumers, func(b *builder) Processor[K1, V1] { return leftOf[K1, V1, K2, V2]{build(b)} })
	rp.consumers = append(rp.consumers, func(b *builder) Processor[K2, V2] { return rightOf[K1, V1, K2, V2]{build(b)} })
	return out
}

type leftOf[K1, V1, K2, V2 any] struct{ p Processor2[K1, V1, K2, V2] }

func (l leftOf[K1, V1, K2, V2]) Process(ctx Context, rec Record[K1, V1]) error {
	return l.p.ProcessLeft(ctx, rec)
}

type rightOf[K1, V1, K2, V2 any] struct{ p Processor2[K1, V1, K2, V2] }

func (r rightOf[K1, V1, K2, V2]) Process(ctx Context, rec Record[K2, V2]) error {
	return r.p.ProcessRight(ctx, rec)
}

// KeepsKey declares that a node forwards each record under the key it
// received it with, so the stream it returns is partitioned like its
// input. Joins need to know: [CoPartitioned] accepts only inputs whose
// keys no node changed since they were read from a topic. The stateless
// operators that keep keys (MapValues, Filter, Peek, ...) declare it.
func KeepsKey() NodeOption {
	return func(o *nodeOptions) { o.keepsKey = true }
}

// CoPartitioned declares that a node with two inputs ([Via2]) matches
// records of the two by key within one task, so both must be partitioned
// by the same key bytes: Job.Build checks that each input's keys come
// unchanged from a topic (see [KeepsKey]), and that every topic they come
// from, and every serde in keySerdes (those the node encodes keys with to
// look them up, such as a table's), encodes keys with the same serde.
// Equal partition counts are checked where they are known: when the
// runner starts and when the test driver is created.
func CoPartitioned(keySerdes ...any) NodeOption {
	return func(o *nodeOptions) {
		o.copartition = true
		o.keySerdes = append(o.keySerdes, keySerdes...)
	}
}

// keyOrigin is where the keys of a stream come from: a topic read with a
// serde, or a serde a node looks keys up with.
type keyOrigin struct {
	serde any
	what  string
}

// checkCopartitioned checks the nodes declared CoPartitioned (see there).
func (j *Job) checkCopartitioned() []error {
	var errs []error
	for _, n := range j.nodes {
		if !n.copartition {
			continue
		}
		var origins []keyOrigin
		for i, p := range n.parents {
			side := [...]string{"left", "right"}[min(i, 1)]
			if err := keyOrigins(p, map[*node]bool{}, &origins); err != nil {
				errs = append(errs, fmt.Errorf("stream: %s: the keys of its %s input %w; a join matches keys within a task, so each input must be partitioned by the key it joins on: re-key with operators.KeyBy (through a repartition topic) instead", n.name, side, err))
			}
		}
		for _, s := range n.keySerdes {
			origins = append(origins, keyOrigin{s, "the key serde it looks keys up with"})
		}
		for _, o := range origins[min(1, len(origins)):] {
			if !sameSerde(o.serde, origins[0].serde) {
				errs = append(errs, fmt.Errorf("stream: %s: its inputs' keys are not encoded alike (%s has key serde %T, %s has %T), so equal keys would not meet in one task; use one key serde for both",
					n.name, origins[0].what, origins[0].serde, o.what, o.serde))
				break
			}
		}
	}
	return errs
}

// keyOrigins adds to origins the sources whose keys reach n unchanged, or
// returns an error naming the node that changed them.
func keyOrigins(n *node, seen map[*node]bool, origins *[]keyOrigin) error {
	if seen[n] {
		return nil
	}
	seen[n] = true
	switch {
	case n.keySerde != nil:
		*origins = append(*origins, keyOrigin{n.keySerde, fmt.Sprintf("topic %q", strings.Join(n.inputs, ","))})
		return nil
	case !n.keepsKey || len(n.parents) == 0:
		return fmt.Errorf("are set by %s (a node that may change keys) after they were read from a topic", n.name)
	}
	for _, p := range n.parents {
		if err := keyOrigins(p, seen, origins); err != nil {
			return err
		}
	}
	return nil
}

// sameSerde reports whether two serdes encode alike, as far as can be
// told: values of the same type that compare equal. Serdes of the same
// type that cannot be compared (serde.Funcs) are taken to be the same.
func sameSerde(a, b any) (same bool) {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb {
		return false
	}
	if ta == nil || !ta.Comparable() {
		return true
	}
	defer func() {
		if recover() != nil { // a comparable type holding an incomparable value
			same = true
		}
	}()
	return a == b
}
