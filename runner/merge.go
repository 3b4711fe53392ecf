package runner

import (
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Merging a task's input partitions deterministically.
//
// A task with several input partitions (a join's two co-partitioned
// topics, a repartition topic and a table) processes their records in
// timestamp order, as Kafka Streams does: next, the record with the lowest
// timestamp among the first queued record of each partition (on a tie,
// the partition of the first topic by name). For that order to depend on
// the logs only, and not on which fetch happened to return first, the
// task takes a record only when every one of its partitions has a record
// queued or is caught up: it has been read to the end offset (last stable
// offset) the broker last reported for it. A partition behind its end
// with nothing queued has records on their way, and the task waits for
// them; one that is caught up has nothing more to offer now, and the task
// goes on without it (Kafka Streams' max.task.idle.ms of 0). So over a log
// written before the job reads it (a replay, a backfill, the determinism
// tests), the merge order is a function of the log. While producers
// append as the job runs, what "caught up" means moves with them, and
// the order of records that arrive at about the same time is not fixed.
//
// A partition's end comes with every fetch that returns its records; for
// a partition not fetched yet, and a position not known yet (no record
// processed, nothing committed), the member asks the brokers once.
//
// While a task waits, its other partitions are still fetched; one whose
// queue grows past maxQueued is paused until the task drains it.

// maxQueued bounds the records queued for one input partition of a task
// that waits for another partition.
const maxQueued = 4 * maxPollRecords

// mergeState is what the merge knows about one input partition of a task.
type mergeState struct {
	end      int64 // the partition's end offset, if endKnown
	endKnown bool
	paused   bool // paused because its queue is full
}

// sawFetch notes the end offset a fetch reported for the partition.
func (in *input) sawFetch(fp kgo.FetchPartition) {
	end := fp.LastStableOffset
	if end < 0 {
		end = fp.HighWatermark
	}
	if end >= 0 {
		in.merge.end, in.merge.endKnown = end, true
	}
}

// caughtUp reports whether the partition has been read to its last known
// end.
func (in *input) caughtUp() bool {
	return in.merge.endKnown && in.next.Offset >= 0 && in.next.Offset >= in.merge.end
}

// skipControl drops the transaction markers at the head of the queue,
// moving the position past them: they are not records to order.
func (in *input) skipControl() {
	for len(in.queue) > 0 && in.queue[0].Attrs.IsControl() {
		r := in.queue[0]
		in.queue[0] = nil
		in.queue = in.queue[1:]
		in.next = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		in.dirty = true
	}
	if len(in.queue) == 0 {
		in.queue = nil
	}
}

// nextInput returns the input whose first queued record the task
// processes next, or nil if it has none to process or must wait for a
// partition that is behind.
func (t *task) nextInput() *input {
	var next *input
	for _, in := range t.inputs {
		in.skipControl()
		if len(in.queue) == 0 {
			if !in.caughtUp() {
				return nil
			}
			continue
		}
		if next == nil || in.queue[0].Timestamp.Before(next.queue[0].Timestamp) {
			next = in
		}
	}
	return next
}

// waiting reports whether the task has records queued that it cannot
// process yet.
func (t *task) waiting() bool {
	if len(t.inputs) < 2 || t.restoring || t.err != nil {
		return false
	}
	queued := false
	for _, in := range t.inputs {
		queued = queued || len(in.queue) > 0
	}
	return queued && t.nextInput() == nil
}

// mergeLocked runs before each round of draining, with the tasks about
// to drain: it asks the brokers for the ends and positions that waiting
// tasks lack (once per partition: later fetches report them), so that a
// task whose other partitions turn out to be caught up drains in this
// very round; and it pauses or resumes partitions by how full their
// queues are. A failure to ask only delays: the task goes on waiting for
// records, and the next round asks again.
func (m *member) mergeLocked(active []*task) {
	var waiting []*task
	for _, t := range active {
		if t.waiting() {
			waiting = append(waiting, t)
		}
	}
	if len(waiting) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), m.r.cfg.ConnectTimeout)
		err := m.learnEndsLocked(ctx, waiting)
		cancel()
		if err != nil {
			m.log.Warn("cannot learn where the input partitions of a waiting task end; it waits for their records", "error", err)
		}
	}
	m.backpressureLocked()
}

// learnEndsLocked asks the brokers for the end offsets, and the group for
// the positions, that the waiting tasks' empty partitions lack.
func (m *member) learnEndsLocked(ctx context.Context, waiting []*task) error {
	type need struct {
		t  *task
		in *input
	}
	var needs []need
	var topics []string
	for _, t := range waiting {
		for _, in := range t.inputs {
			if len(in.queue) == 0 && (!in.merge.endKnown || in.next.Offset < 0) {
				needs = append(needs, need{t, in})
				topics = append(topics, in.topic)
			}
		}
	}
	if len(needs) == 0 {
		return nil
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	ends, err := m.adm.ListCommittedOffsets(ctx, topics...) // read_committed ends
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list end offsets of %v: %w", topics, err)
	}
	starts, err := m.adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list start offsets of %v: %w", topics, err)
	}
	var committed map[string]map[int32]int64
	for _, n := range needs {
		p := n.t.ID().Partition
		if end, ok := ends.Lookup(n.in.topic, p); ok && !n.in.merge.endKnown {
			n.in.merge.end, n.in.merge.endKnown = end.Offset, true
		}
		if n.in.next.Offset >= 0 {
			continue
		}
		// Nothing processed yet: the consumer starts at the group's
		// committed offset, or at the log's start without one.
		if committed == nil {
			resp, err := m.adm.FetchOffsets(ctx, m.r.topo.Name())
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				return fmt.Errorf("runner: fetch committed offsets of group %q: %w", m.r.topo.Name(), err)
			}
			committed = map[string]map[int32]int64{}
			resp.Each(func(o kadm.OffsetResponse) {
				if committed[o.Topic] == nil {
					committed[o.Topic] = map[int32]int64{}
				}
				committed[o.Topic][o.Partition] = o.At
			})
		}
		if at, ok := committed[n.in.topic][p]; ok && at >= 0 {
			n.in.next = kgo.EpochOffset{Epoch: -1, Offset: at}
		} else if start, ok := starts.Lookup(n.in.topic, p); ok {
			n.in.next = kgo.EpochOffset{Epoch: -1, Offset: start.Offset}
		}
	}
	return nil
}

// backpressureLocked pauses the partitions whose queues grew past
// maxQueued while their task waits, and resumes those it paused once
// their task no longer waits or has drained them.
func (m *member) backpressureLocked() {
	pause, resume := map[string][]int32{}, map[string][]int32{}
	for _, t := range m.tasks {
		waiting := t.waiting()
		p := t.ID().Partition
		for _, in := range t.inputs {
			switch {
			case !in.merge.paused && waiting && len(in.queue) > maxQueued:
				in.merge.paused = true
				pause[in.topic] = append(pause[in.topic], p)
			case in.merge.paused && (!waiting || len(in.queue) <= maxQueued/2):
				in.merge.paused = false
				resume[in.topic] = append(resume[in.topic], p)
				delete(m.paused, partKey{in.topic, p})
			}
		}
	}
	// Partitions paused for tasks that are gone (revoked) or restarted.
	for tp := range m.paused {
		id, _ := m.taskID(tp.topic, tp.partition)
		if t := m.tasks[id]; t != nil && slices.ContainsFunc(t.inputs, func(in *input) bool { return in.topic == tp.topic && in.merge.paused }) {
			continue
		}
		resume[tp.topic] = append(resume[tp.topic], tp.partition)
		delete(m.paused, tp)
	}
	if len(pause) > 0 {
		if m.paused == nil {
			m.paused = map[partKey]bool{}
		}
		for topic, ps := range pause {
			for _, p := range ps {
				m.paused[partKey{topic, p}] = true
			}
		}
		m.cl.PauseFetchPartitions(pause)
		m.log.Debug("paused partitions of tasks waiting for another input", "partitions", pause)
	}
	if len(resume) > 0 {
		m.cl.ResumeFetchPartitions(resume)
	}
}
