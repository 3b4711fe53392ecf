package stream

// Task is the low-level API, Samza's StreamTask: one object per task
// (partition) that sees every record of its input topics as bytes, in
// offset order per partition, and writes to any declared output topic
// with [Context.Emit]. A Task may also implement [Initializer] and
// [Closer]. It is used by one goroutine at a time.
type Task interface {
	Process(ctx Context, rec RawRecord) error
}

// TaskSpec describes a low-level task to add to a job with [AddTask].
type TaskSpec struct {
	// Name names the task's node in descriptions of the job.
	Name string
	// Inputs are the topics the task reads. They are co-partitioned:
	// partition p of each goes to the same Task.
	Inputs []string
	// Outputs are the topics the task may Emit to.
	Outputs []string
	// Stores are the stores the task uses through Context.Store.
	Stores []StoreSpec
	// Timers, if not empty, names the task's timer store: a store (with a
	// changelog, like the others) that keeps the timers the task sets
	// through Context.Timers(Timers). The Task must then implement
	// [TimerHandler].
	Timers string
	// New returns the Task for one partition. It is called once per task.
	New func() Task
}

// AddTask adds a low-level task to the job.
func AddTask(j *Job, spec TaskSpec) {
	name := spec.Name
	if name == "" {
		name = "task"
	}
	n := j.addNode("task")
	n.name = name
	if !j.checkOpen("task " + name) {
		return
	}
	if spec.New == nil {
		j.errorf("stream: task %q: nil New", name)
		return
	}
	if len(spec.Inputs) == 0 {
		j.errorf("stream: task %q: no inputs", name)
		return
	}
	for _, topic := range spec.Inputs {
		j.addSource(topic, n, func(b *builder) Processor[[]byte, []byte] {
			if t, ok := b.memo[n]; ok {
				return t.(Processor[[]byte, []byte])
			}
			t := spec.New()
			b.memo[n] = t
			b.track(t)
			b.own(n, t)
			return t
		})
	}
	for _, topic := range spec.Outputs {
		j.addOutput(topic, n)
	}
	for _, st := range spec.Stores {
		j.addStore(st, n)
	}
	if spec.Timers != "" {
		j.addStore(StoreSpec{Name: spec.Timers}, n)
		n.timers = append(n.timers, spec.Timers)
	}
}
