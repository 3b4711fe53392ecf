package stream

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Topology is a built, validated job: the unit the runner executes. It is
// read-only and safe for concurrent use.
type Topology struct {
	job      *Job
	subs     []*Subtopology
	bySource map[string]*Subtopology
}

// Subtopology is a connected part of a job's graph. Its input topics are
// co-partitioned: partition p of each is processed by the same task.
type Subtopology struct {
	ID      int
	Inputs  []string    // sorted; includes repartition topics it reads
	Outputs []string    // sorted; includes repartition topics it writes
	Stores  []StoreSpec // sorted by name
	nodes   []*node     // in creation order
}

// InternalTopic is a topic the runner creates and owns for a job.
type InternalTopic struct {
	Name string
	// Repartition is true for a repartition topic, false for a changelog.
	Repartition bool
	// Sub is, for a changelog, the sub-topology of its store (the topic has
	// that sub-topology's partition count); for a repartition topic, the
	// sub-topology that writes it.
	Sub int
}

// Build validates the job and returns its topology. It reports every
// mistake made while building the job, joined into one error. After Build
// the job can no longer change; calling Build again returns the same
// result.
func (j *Job) Build() (*Topology, error) {
	j.mu.Lock()
	j.mu.built = true
	j.mu.Unlock()

	errs := slices.Clone(j.errs)
	if len(j.sources) == 0 {
		errs = append(errs, fmt.Errorf("stream: job %q has no inputs", j.name))
	}
	errs = append(errs, j.checkGlobals()...)
	errs = append(errs, j.checkCopartitioned()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Union-find over the nodes: a node joins the component of each parent.
	parent := make([]int, len(j.nodes))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for _, n := range j.nodes {
		for _, p := range n.parents {
			a, b := find(n.id), find(p.id)
			if a != b {
				parent[max(a, b)] = min(a, b)
			}
		}
	}

	t := &Topology{job: j, bySource: map[string]*Subtopology{}}
	byRoot := map[int]*Subtopology{}
	for _, n := range j.nodes { // creation order gives deterministic IDs
		root := find(n.id)
		sub := byRoot[root]
		if sub == nil {
			if len(n.inputs) == 0 {
				continue // a node with no source upstream: nothing flows here
			}
			sub = &Subtopology{ID: len(t.subs)}
			byRoot[root] = sub
			t.subs = append(t.subs, sub)
		}
		sub.nodes = append(sub.nodes, n)
		sub.Inputs = append(sub.Inputs, n.inputs...)
		for _, name := range n.stores {
			sub.Stores = append(sub.Stores, j.stores[name].spec)
		}
		for _, o := range n.outputs {
			if !slices.Contains(sub.Outputs, o) {
				sub.Outputs = append(sub.Outputs, o)
			}
		}
	}
	for _, sub := range t.subs {
		slices.Sort(sub.Inputs)
		slices.Sort(sub.Outputs)
		slices.SortFunc(sub.Stores, func(a, b StoreSpec) int { return strings.Compare(a.Name, b.Name) })
		for _, in := range sub.Inputs {
			t.bySource[in] = sub
		}
	}
	return t, nil
}

// Name is the job's name.
func (t *Topology) Name() string { return t.job.name }

// Subtopologies returns the sub-topologies, ordered by ID.
func (t *Topology) Subtopologies() []*Subtopology { return t.subs }

// Inputs returns the job's input topics, sorted; not its internal topics.
// They include the topics of global tables, which every instance reads in
// full rather than through the consumer group (see SourceTopics).
func (t *Topology) Inputs() []string {
	in := slices.DeleteFunc(sortedKeys(t.job.sources), func(s string) bool { return t.job.internal[s] })
	if len(t.job.globals) == 0 {
		return in
	}
	in = append(in, t.job.globalTopics()...)
	slices.Sort(in)
	return slices.Compact(in)
}

// Outputs returns the job's output topics, sorted; not its internal
// topics.
func (t *Topology) Outputs() []string {
	return slices.DeleteFunc(sortedKeys(t.job.outputs), func(s string) bool { return t.job.internal[s] })
}

// SourceTopics returns every topic the job consumes: its inputs and its
// repartition topics, sorted.
func (t *Topology) SourceTopics() []string { return sortedKeys(t.job.sources) }

// Internal returns the topics the runner creates for the job: a changelog
// per store (unless the store mirrors a topic) and the repartition topics,
// sorted by name.
func (t *Topology) Internal() []InternalTopic {
	var out []InternalTopic
	for _, sub := range t.subs {
		for _, st := range sub.Stores {
			if st.Changelog == "" {
				out = append(out, InternalTopic{Name: t.ChangelogTopic(st.Name), Sub: sub.ID})
			}
		}
		for _, o := range sub.Outputs {
			if t.job.internal[o] {
				out = append(out, InternalTopic{Name: o, Repartition: true, Sub: sub.ID})
			}
		}
	}
	slices.SortFunc(out, func(a, b InternalTopic) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ChangelogTopic returns the topic store is restored from: its changelog,
// "<job>-<store>-changelog", or the topic it mirrors.
func (t *Topology) ChangelogTopic(store string) string {
	if d, ok := t.job.stores[store]; ok && d.spec.Changelog != "" {
		return d.spec.Changelog
	}
	return t.job.name + "-" + store + "-changelog"
}

// Store returns the declaration of a store.
func (t *Topology) Store(name string) (StoreSpec, bool) {
	d, ok := t.job.stores[name]
	if !ok {
		return StoreSpec{}, false
	}
	return d.spec, true
}

// SubtopologyOf returns the sub-topology that reads topic.
func (t *Topology) SubtopologyOf(topic string) (*Subtopology, bool) {
	sub, ok := t.bySource[topic]
	return sub, ok
}

// NewInstance builds the processors of sub-topology id for one task. Each
// task gets its own instance.
func (t *Topology) NewInstance(id int) (*Instance, error) {
	if id < 0 || id >= len(t.subs) {
		return nil, fmt.Errorf("stream: job %q has no sub-topology %d", t.job.name, id)
	}
	b := &builder{memo: map[any]any{}, clock: &clock{}}
	in := &Instance{sources: map[string]Processor[[]byte, []byte]{}, eventTime: map[string]bool{}, clock: b.clock}
	for _, topic := range t.subs[id].Inputs {
		src := t.job.sources[topic]
		p := src.build(b)
		if p == nil {
			return nil, fmt.Errorf("stream: job %q: the processor for topic %q is nil", t.job.name, topic)
		}
		in.sources[topic] = p
		in.eventTime[topic] = src.eventTime
	}
	in.tracked = b.tracked
	for i := len(b.tracked) - 1; i >= 0; i-- { // upstream first
		if h, ok := b.tracked[i].(StreamTimeHandler); ok {
			in.handlers = append(in.handlers, h)
		}
	}
	in.owners = map[string]TimerHandler{}
	for n, p := range b.owners {
		h, ok := p.(TimerHandler)
		if !ok {
			return nil, fmt.Errorf("stream: job %q: %s declares timer stores %s but its processor (%T) has no OnTimer method (stream.TimerHandler)",
				t.job.name, n.name, strings.Join(n.timers, ", "), p)
		}
		for _, name := range n.timers {
			in.owners[name] = h
		}
	}
	return in, nil
}

// String describes the topology as text: each sub-topology with its
// topics and nodes.
func (t *Topology) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "job %s\n", t.job.name)
	sb.WriteString(t.globalSummary())
	for _, sub := range t.subs {
		fmt.Fprintf(&sb, "  sub-topology %d: inputs %s; outputs %s\n", sub.ID, strings.Join(sub.Inputs, ", "), strings.Join(sub.Outputs, ", "))
		for _, n := range sub.nodes {
			fmt.Fprintf(&sb, "    %s", n.name)
			if len(n.parents) > 0 {
				names := make([]string, len(n.parents))
				for i, p := range n.parents {
					names[i] = p.name
				}
				fmt.Fprintf(&sb, " <- %s", strings.Join(names, ", "))
			}
			if len(n.inputs) > 0 {
				fmt.Fprintf(&sb, " (reads %s)", strings.Join(n.inputs, ", "))
			}
			if len(n.outputs) > 0 {
				fmt.Fprintf(&sb, " (writes %s)", strings.Join(n.outputs, ", "))
			}
			if len(n.stores) > 0 {
				fmt.Fprintf(&sb, " (stores %s)", strings.Join(n.stores, ", "))
			}
			sb.WriteByte('\n')
		}
	}
	return sb.String()
}
