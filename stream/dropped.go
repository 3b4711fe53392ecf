package stream

// OnDropped sets what the job does with input records that an operator
// drops on purpose ([Context.Dropped]), such as a record that arrives
// after its window has closed (reason "late"). [PolicySkip], the default,
// counts them by reason (metric samsa_dropped_records_total) and logs
// them at a limited rate; [PolicyDeadLetter] also writes each such input
// record, once, to the dead-letter topic, with the reasons as its
// HeaderDLQError and HeaderDLQKind "dropped". The runner's --on-dropped
// flag overrides it. [PolicyFail] is refused: a drop is no failure.
func (j *Job) OnDropped(p ErrorPolicy) {
	if p != PolicySkip && p != PolicyDeadLetter {
		j.errorf("stream: OnDropped: policy %q: want skip or dlq", p)
		return
	}
	j.policy.dropped = p
}

// OnDropped returns the job's policy for records operators drop: what
// [Job.OnDropped] set, or [PolicySkip].
func (t *Topology) OnDropped() ErrorPolicy {
	return orDefault(t.job.policy.dropped, PolicySkip)
}
