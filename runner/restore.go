package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/state"
)

// restoreBatch is how many changelog records a reader that writes
// through state.Batch applies at once. (A task's restore writes through a
// state.Load, which sizes its batches by its backend's measure.)
const restoreBatch = 16 << 10

// restoreFetchWait bounds how long a restore's fetch waits for records:
// well under restoreQuietPoll, so that a fetch sent before every partition
// was ready (kgo sends one for the partitions it has positions for) cannot
// hold the others up long enough to look like the end of a compacted
// changelog.
const restoreFetchWait = 500 * time.Millisecond

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
	committed, err := m.fetchStableOffsets(ctx)
	if err != nil {
		return err
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
	var jobs []*restoreJob
	for _, t := range waiting {
		tj, err := m.planRestore(t, committed, starts, ends)
		if err != nil {
			return err
		}
		jobs = append(jobs, tj...)
	}
	began := time.Now()
	if err := m.restoreAll(ctx, jobs); err != nil {
		return err
	}
	var records int64
	for _, j := range jobs {
		records += j.applied
	}
	m.log.Info("restored tasks", "tasks", len(waiting), "stores", len(jobs), "records", records, "took", time.Since(began).Round(time.Millisecond))
	for _, j := range jobs {
		m.local.note(j.t.ID(), map[string]int64{j.store: j.to})
	}
	for _, j := range jobs {
		if err := m.rewriteUncommitted(ctx, j); err != nil {
			return err
		}
	}
	resume := map[string][]int32{}
	for _, t := range waiting {
		t.restoring = false
		for _, in := range t.inputs {
			resume[in.topic] = append(resume[in.topic], t.ID().Partition)
		}
	}
	m.cl.ResumeFetchPartitions(resume)
	return nil
}

// restoreJob is the restore of one store of one task: the changelog
// records [from, to) to apply, and the uncommitted tail [to, end) whose
// keys to rewrite.
type restoreJob struct {
	t              *task
	store, topic   string
	from, to, end  int64
	mirror         bool
	applied        int64
	load           state.Load
	pending        int64 // records written to load since its last commit
	began, lastLog time.Time
	restored       prometheus.Counter
	left           prometheus.Gauge
	done           bool
}

// planRestore plans how to bring a task's stores to the state of its committed input
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
func (m *member) planRestore(t *task, committed kadm.OffsetResponses, starts, ends kadm.ListedOffsets) ([]*restoreJob, error) {
	p := t.ID().Partition
	var meta map[string]int64
	for _, in := range t.inputs {
		o, ok := committed.Lookup(in.topic, p)
		if !ok || o.Err != nil || o.At < 0 {
			continue
		}
		in.next = kgo.EpochOffset{Epoch: o.LeaderEpoch, Offset: o.At}
		// The stream time the stores' state reflects: what windows and
		// stream-time timers go on from.
		t.SetStreamTime(metaStreamTime(o.Metadata))
		if meta == nil && o.Metadata != "" {
			var err error
			if meta, err = decodeMeta(o.Metadata); err != nil {
				m.log.Warn("ignoring commit metadata: all changelog records are treated as uncommitted", "task", t.ID(), "topic", in.topic, "error", err)
			}
		}
	}
	backend := t.stores.Backend()
	var jobs []*restoreJob
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
			return nil, fmt.Errorf("runner: task %s store %s: %w", t.ID(), spec.Name, err)
		}
		if local != state.NoOffset && (local > valid || local < start) {
			m.log.Warn("wiping local store: it does not match the committed changelog", "store", spec.Name, "task", t.ID(), "local_offset", local, "committed_offset", valid, "changelog_start", start)
		}
		if local == state.NoOffset || local > valid || local < start {
			if err := backend.Wipe(spec.Name); err != nil {
				return nil, fmt.Errorf("runner: task %s store %s: %w", t.ID(), spec.Name, err)
			}
			local = start
		}
		pos.committed = valid
		jobs = append(jobs, &restoreJob{
			t: t, store: spec.Name, topic: pos.topic, from: local, to: valid, end: end,
			mirror:   spec.Changelog != "",
			restored: m.r.metrics.restored.WithLabelValues(spec.Name, t.ID().String()),
			left:     m.r.metrics.restoreLeft.WithLabelValues(spec.Name, t.ID().String()),
		})
	}
	return jobs, nil
}

// rewriteUncommitted marks for rewriting the keys of the changelog
// records past the committed offset (see planRestore).
func (m *member) rewriteUncommitted(ctx context.Context, j *restoreJob) error {
	if j.mirror || j.end <= j.to {
		return nil
	}
	touched := map[string]bool{}
	err := m.readPartition(ctx, j.topic, j.t.ID().Partition, j.to, j.end, func(r *kgo.Record) {
		touched[string(r.Key)] = true
	})
	if err != nil {
		return err
	}
	if len(touched) == 0 {
		return nil // transaction markers, or aborted records
	}
	for k := range touched {
		if err := j.t.stores.Touch(j.store, []byte(k)); err != nil {
			return fmt.Errorf("runner: task %s store %s: %w", j.t.ID(), j.store, err)
		}
	}
	j.t.stateChanged = true
	m.log.Info("rewriting keys changed after the last commit of a previous owner", "store", j.store, "task", j.t.ID(), "records", j.end-j.to, "keys", len(touched))
	return nil
}

// restoreAll runs the restore jobs together: one consumer fetches every
// changelog partition at once, and each partition's records go into its
// store through a state.Load, committed with the offset they reach
// whenever the load is full.
func (m *member) restoreAll(ctx context.Context, jobs []*restoreJob) error {
	type tp struct {
		topic     string
		partition int32
	}
	byTP := map[tp]*restoreJob{}
	offsets := map[string]map[int32]kgo.Offset{}
	for _, j := range jobs {
		j.began, j.lastLog = time.Now(), time.Now()
		j.left.Set(float64(j.to - j.from))
		j.load = state.NewLoad(j.t.stores.Backend(), j.store)
		defer j.load.Close()
		if j.from >= j.to {
			if err := m.finishJob(j); err != nil {
				return err
			}
			continue
		}
		p := j.t.ID().Partition
		byTP[tp{j.topic, p}] = j
		if offsets[j.topic] == nil {
			offsets[j.topic] = map[int32]kgo.Offset{}
		}
		offsets[j.topic][p] = kgo.NewOffset().At(j.from)
	}
	if len(byTP) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(m.base,
		kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(restoreFetchWait),
	)...)
	if err != nil {
		return fmt.Errorf("runner: restore: %w", err)
	}
	defer cl.Close()
	for left := len(byTP); left > 0; {
		fs, quiet, err := m.pollChangelog(ctx, cl)
		if err != nil {
			return err
		}
		if quiet {
			break // nothing more arrives below the ends: the rest was compacted
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			j := byTP[tp{p.Topic, p.Partition}]
			if err != nil || j == nil || j.done {
				return
			}
			err = m.restoreRecords(j, p.Records)
			if j.done {
				left--
			}
		})
		if err != nil {
			return err
		}
	}
	for _, j := range byTP {
		if !j.done {
			if err := m.finishJob(j); err != nil {
				return err
			}
		}
	}
	return nil
}

// restoreRecords writes records fetched from j's changelog partition, in
// offset order, into j's store: it commits them whenever the load is
// full, and finishes j at its end offset.
func (m *member) restoreRecords(j *restoreJob, records []*kgo.Record) error {
	for _, r := range records {
		if r.Offset >= j.to {
			return m.finishJob(j)
		}
		// A record with a null key is no row of a table read from a
		// topic (stream.TableInput drops it too); samsa's own changelogs
		// never hold one.
		if !r.Attrs.IsControl() && r.Key != nil {
			if r.Value == nil {
				j.load.Delete(r.Key)
			} else {
				j.load.Put(r.Key, r.Value)
			}
			j.pending++
		}
		if r.Offset+1 >= j.to {
			return m.finishJob(j)
		}
		if j.load.Full() {
			if err := m.commitRestore(j, r.Offset+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// commitRestore commits a job's load with the offset it reaches, and logs
// progress every few seconds.
func (m *member) commitRestore(j *restoreJob, off int64) error {
	if err := j.load.Commit(off); err != nil {
		return fmt.Errorf("runner: restore %s of task %s: %w", j.store, j.t.ID(), err)
	}
	j.applied += j.pending
	j.restored.Add(float64(j.pending))
	j.pending = 0
	j.left.Set(float64(j.to - off))
	if time.Since(j.lastLog) >= 5*time.Second {
		j.lastLog = time.Now()
		done, total := off-j.from, j.to-j.from
		rate := float64(done) / time.Since(j.began).Seconds()
		eta := time.Duration(float64(total-done) / rate * float64(time.Second))
		m.log.Info("restoring", "store", j.store, "task", j.t.ID(), "done", done, "total", total,
			"rate", fmt.Sprintf("%.0f/s", rate), "left", eta.Round(time.Second))
	}
	return nil
}

// finishJob commits the rest of a job, at its end offset.
func (m *member) finishJob(j *restoreJob) error {
	j.done = true
	if err := m.commitRestore(j, j.to); err != nil {
		return err
	}
	m.log.Info("restored store", "store", j.store, "task", j.t.ID(), "records", j.applied, "from", j.from, "to", j.to,
		"took", time.Since(j.began).Round(time.Millisecond))
	return nil
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
		kgo.FetchMaxWait(restoreFetchWait),
	)...)
	if err != nil {
		return fmt.Errorf("runner: read %s/%d: %w", topic, partition, err)
	}
	defer cl.Close()
	for next := from; next < to; {
		fs, quiet, err := m.pollChangelog(ctx, cl)
		if err != nil {
			return err
		}
		if quiet {
			return nil // nothing more arrives below `to`: the rest was compacted
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

// pollChangelog polls a changelog reader. quiet reports that nothing
// arrived for restoreQuietPoll: the rest of the range it reads holds no
// record (compacted away).
func (m *member) pollChangelog(ctx context.Context, cl *kgo.Client) (fs kgo.Fetches, quiet bool, err error) {
	pctx, cancel := context.WithTimeout(ctx, restoreQuietPoll)
	fs = cl.PollFetches(pctx)
	cancel()
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if fs.NumRecords() == 0 && errors.Is(fs.Err0(), context.DeadlineExceeded) {
		// Silence means compaction only from a broker that answers.
		if err := m.r.brokers.check(); err != nil {
			return nil, false, fmt.Errorf("runner: read changelog: nothing arrived for %s: %w", restoreQuietPoll, err)
		}
		return nil, true, nil
	}
	fs.EachError(func(t string, p int32, e error) {
		if !errors.Is(e, context.DeadlineExceeded) {
			err = errors.Join(err, fmt.Errorf("runner: read changelog %s/%d: %w", t, p, e))
		}
	})
	return fs, false, err
}

// NewLoad implements state.Loader with the load of the store's backend.
func (s *splitBackend) NewLoad(store string) state.Load {
	return state.NewLoad(s.byStore[store], store)
}
