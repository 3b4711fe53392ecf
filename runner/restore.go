package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/state"
)

// restoreBatch is how many changelog records a restore applies at once.
const restoreBatch = 16 << 10

// restoreQuietPoll is how long a restore waits for records it knows are
// there before it concludes that the rest of its range was compacted away.
const restoreQuietPoll = 5 * time.Second

// restoreLocked restores the stores of every task waiting for it, then
// lets the tasks' input partitions be fetched.
func (m *member) restoreLocked(ctx context.Context) error {
	var waiting []*task
	for _, t := range m.tasks {
		if t.restoring {
			waiting = append(waiting, t)
		}
	}
	if len(waiting) == 0 {
		return nil
	}
	committed, err := m.adm.FetchOffsets(ctx, m.r.topo.Name())
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: fetch committed offsets of group %q: %w", m.r.topo.Name(), err)
	}
	var topics []string
	for _, t := range waiting {
		for _, pos := range t.logs {
			topics = append(topics, pos.topic)
		}
	}
	starts, err := m.adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list changelog start offsets: %w", err)
	}
	ends, err := m.adm.ListCommittedOffsets(ctx, topics...) // read_committed ends
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list changelog end offsets: %w", err)
	}
	resume := map[string][]int32{}
	for _, t := range waiting {
		if err := m.restoreTask(ctx, t, committed, starts, ends); err != nil {
			return err
		}
		t.restoring = false
		for _, in := range t.inputs {
			resume[in.topic] = append(resume[in.topic], t.ID().Partition)
		}
	}
	m.cl.ResumeFetchPartitions(resume)
	return nil
}

// restoreTask brings a task's stores to the state of its committed input
// offsets. Per store, with V the changelog offset committed with the
// input offsets and L the offset the local store reflects:
//
//   - L > V (local state from input that was never committed) or L before
//     the changelog's start: wipe the store, L = start;
//   - restore the changelog from L to V;
//   - records past V were written by an instance that died before its
//     commit: they do not reflect committed input, so each of their keys
//     is written again with its restored value at the next commit, which
//     makes the changelog's latest record per key right again.
//
// A store that mirrors a topic restores from that topic up to the
// committed offset of the task's partition of it.
func (m *member) restoreTask(ctx context.Context, t *task, committed kadm.OffsetResponses, starts, ends kadm.ListedOffsets) error {
	p := t.ID().Partition
	var meta map[string]int64
	for _, in := range t.inputs {
		o, ok := committed.Lookup(in.topic, p)
		if !ok || o.Err != nil || o.At < 0 {
			continue
		}
		in.next = kgo.EpochOffset{Epoch: o.LeaderEpoch, Offset: o.At}
		if meta == nil && o.Metadata != "" {
			var err error
			if meta, err = decodeMeta(o.Metadata); err != nil {
				m.log.Warn("ignoring commit metadata: all changelog records are treated as uncommitted", "task", t.ID(), "topic", in.topic, "error", err)
			}
		}
	}
	backend := t.stores.Backend()
	for _, st := range t.stores.Stores() {
		spec := st.Spec()
		pos := t.logs[spec.Name]
		start, end := int64(0), int64(0)
		if o, ok := starts.Lookup(pos.topic, p); ok {
			start = o.Offset
		}
		if o, ok := ends.Lookup(pos.topic, p); ok {
			end = o.Offset
		}
		valid := start
		if spec.Changelog != "" {
			for _, in := range t.inputs {
				if in.topic == spec.Changelog && in.next.Offset >= 0 {
					valid = in.next.Offset
				}
			}
		} else if v, ok := meta[spec.Name]; ok {
			valid = v
		}
		if valid > end {
			m.log.Warn("the changelog ends before the committed offset; was it deleted? restoring what it holds", "store", spec.Name, "task", t.ID(), "changelog", pos.topic, "committed", valid, "end", end)
			valid = end
		}
		valid = max(valid, start)

		local, err := backend.Offset(spec.Name)
		if err != nil {
			return fmt.Errorf("runner: task %s store %s: %w", t.ID(), spec.Name, err)
		}
		if local != state.NoOffset && (local > valid || local < start) {
			m.log.Warn("wiping local store: it does not match the committed changelog", "store", spec.Name, "task", t.ID(), "local_offset", local, "committed_offset", valid, "changelog_start", start)
		}
		if local == state.NoOffset || local > valid || local < start {
			if err := backend.Wipe(spec.Name); err != nil {
				return fmt.Errorf("runner: task %s store %s: %w", t.ID(), spec.Name, err)
			}
			local = start
		}
		began := time.Now()
		n, err := m.restoreRange(ctx, t, spec.Name, pos.topic, local, valid)
		if err != nil {
			return err
		}
		pos.committed = valid
		m.log.Info("restored store", "store", spec.Name, "task", t.ID(), "records", n, "from", local, "to", valid, "took", time.Since(began).Round(time.Millisecond))

		if spec.Changelog == "" && end > valid {
			touched := map[string]bool{}
			err := m.readPartition(ctx, pos.topic, p, valid, end, func(r *kgo.Record) {
				touched[string(r.Key)] = true
			})
			if err != nil {
				return err
			}
			for k := range touched {
				if err := t.stores.Touch(spec.Name, []byte(k)); err != nil {
					return fmt.Errorf("runner: task %s store %s: %w", t.ID(), spec.Name, err)
				}
			}
			t.stateChanged = true
			m.log.Info("rewriting keys changed after the last commit of a previous owner", "store", spec.Name, "task", t.ID(), "records", end-valid, "keys", len(touched))
		}
	}
	return nil
}

// restoreRange applies the changelog records in [from, to) of the task's
// partition of topic to store, in batches that each record the offset
// they reach, and returns how many it applied.
func (m *member) restoreRange(ctx context.Context, t *task, store, topic string, from, to int64) (int64, error) {
	backend := t.stores.Backend()
	var b state.Batch
	var n int64
	total := to - from
	began, lastLog := time.Now(), time.Now()
	restored := m.r.metrics.restored.WithLabelValues(store, t.ID().String())
	left := m.r.metrics.restoreLeft.WithLabelValues(store, t.ID().String())
	left.Set(float64(total))
	apply := func(off int64) error {
		b.SetOffset(store, off)
		if err := backend.Apply(&b); err != nil {
			return fmt.Errorf("runner: restore %s of task %s: %w", store, t.ID(), err)
		}
		restored.Add(float64(b.Len()))
		left.Set(float64(to - off))
		b.Reset()
		return nil
	}
	var applyErr error
	err := m.readPartition(ctx, topic, t.ID().Partition, from, to, func(r *kgo.Record) {
		if applyErr != nil {
			return
		}
		if r.Value == nil {
			b.Delete(store, r.Key)
		} else {
			b.Put(store, r.Key, r.Value)
		}
		n++
		if b.Len() >= restoreBatch {
			applyErr = apply(r.Offset + 1)
			if time.Since(lastLog) >= 5*time.Second {
				lastLog = time.Now()
				done := r.Offset + 1 - from
				rate := float64(done) / time.Since(began).Seconds()
				eta := time.Duration(float64(total-done) / rate * float64(time.Second))
				m.log.Info("restoring", "store", store, "task", t.ID(), "done", done, "total", total,
					"rate", fmt.Sprintf("%.0f/s", rate), "left", eta.Round(time.Second))
			}
		}
	})
	if err = errors.Join(err, applyErr); err != nil {
		return n, err
	}
	return n, apply(to)
}

// readPartition calls fn for each record of topic/partition in [from, to),
// read_committed, in offset order. Offsets with no record (compacted
// away, transaction markers) are skipped.
func (m *member) readPartition(ctx context.Context, topic string, partition int32, from, to int64, fn func(*kgo.Record)) error {
	if from >= to {
		return nil
	}
	cl, err := kgo.NewClient(append(m.base,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return fmt.Errorf("runner: read %s/%d: %w", topic, partition, err)
	}
	defer cl.Close()
	for next := from; next < to; {
		pctx, cancel := context.WithTimeout(ctx, restoreQuietPoll)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if fs.NumRecords() == 0 && errors.Is(fs.Err0(), context.DeadlineExceeded) {
			// Nothing more arrives below `to`: the rest was compacted.
			return nil
		}
		var ferr error
		fs.EachError(func(t string, p int32, e error) {
			if !errors.Is(e, context.DeadlineExceeded) {
				ferr = errors.Join(ferr, fmt.Errorf("runner: read %s/%d: %w", t, p, e))
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= to {
				next = to
				return
			}
			next = r.Offset + 1
			if !r.Attrs.IsControl() {
				fn(r)
			}
		})
	}
	return nil
}
