package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/internal/assign"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
	"github.com/samsa-go/samsa/stream"
)

// Standby tasks (Config.StandbyReplicas).
//
// The group's leader names, for each task with Pebble stores, up to N
// instances other than its owner that keep a standby copy of its stores
// (internal/assign); each instance finds its standby tasks in its
// assignment's user data. A standby task is the task's own directory
// under <state-dir>/tasks/<task>, the one the task opens when it runs
// here, kept up to date by applying its changelog records as a restore
// does, with their offsets, and processing nothing. When the task moves
// here, the standby closes and the task opens the directory: its restore
// reads only what the standby had not applied yet.
//
// How far a standby reads. Under at-least-once a changelog may hold, past
// the offset the owner's last commit recorded, records of input that was
// never committed: if the owner dies, its successor rewrites their keys
// (see planRestore), and a local store past the committed offset is wiped
// rather than trusted. So a standby applies records only below the
// committed changelog offset, which it reads from the group's commit
// metadata every standbyRefresh (stable offsets only: never those of a
// transaction still open). Under exactly-once the same bound holds, and
// the standby reads read_committed, so aborted records never reach it.
// A standby is thus about one commit interval plus one refresh behind its
// owner, and a failover restores about that much.
//
// In-memory stores have no standby copy: they are restored in full when
// their task moves.

// standbyRefresh is how often standbys learn the committed changelog
// offsets: the commit interval, within these bounds.
const (
	minStandbyRefresh = 200 * time.Millisecond
	maxStandbyRefresh = 10 * time.Second
)

// standbyFetchWait bounds how long a standby's fetch waits for records.
const standbyFetchWait = 250 * time.Millisecond

// standbys are an instance's standby tasks. Its methods are safe for
// concurrent use; a nil *standbys (no standby replicas configured) does
// nothing.
type standbys struct {
	m       *member
	log     hclog.Logger
	refresh time.Duration
	cl      *kgo.Client // reads the changelogs, read_committed

	tasks   prometheus.Gauge
	lag     *prometheus.GaugeVec   // by store, task
	applied *prometheus.CounterVec // by store, task

	wake   chan struct{} // the assignment changed, or a task stopped here
	pollMu sync.Mutex
	cancel context.CancelFunc // ends the poll in progress

	mu struct {
		sync.Mutex
		assigned map[stream.TaskID]bool // the standby tasks the group gave us
		active   map[stream.TaskID]bool // tasks running here: their directories are theirs
		failed   map[stream.TaskID]bool // could not open; tried again on the next assignment
		open     map[stream.TaskID]*standbyTask
		byTP     map[topicPartition]*standbyStore
	}
}

// standbyTask is one standby task's open directory.
type standbyTask struct {
	id       stream.TaskID
	db       *pebblestore.DB
	stores   []*standbyStore
	opened   time.Time
	caughtUp bool // logged once it first reached its owner's last commit
}

// standbyStore is one store of a standby task, and where it is in its
// changelog.
type standbyStore struct {
	t       *standbyTask
	name    string
	topic   string // its changelog, or the topic a table mirrors
	mirror  bool   // a table read from a topic: bounded by that topic's committed offset
	local   int64  // the next changelog offset to apply, once the batch is
	stored  int64  // the offset in the store: local as of the last apply
	limit   int64  // the committed changelog offset; -1 until known
	reading bool   // its partition is consumed
	applied int64  // records applied since it opened
	b       state.Batch
}

// newStandbys returns m's standby tasks, or nil if the job has no
// standby replicas or no Pebble stores.
func newStandbys(m *member) (*standbys, error) {
	if m.r.cfg.StandbyReplicas <= 0 {
		return nil, nil
	}
	stateful := false
	for sub := range m.r.topo.Subtopologies() {
		stateful = stateful || m.local.stateful(sub)
	}
	if !stateful {
		m.log.Warn("--standby-replicas has no effect: the job has no stores on disk", "standby_replicas", m.r.cfg.StandbyReplicas)
		return nil, nil
	}
	cl, err := kgo.NewClient(append(slices.Clone(m.base),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		// A fetch waiting for records would hold up the partitions
		// added after it was sent.
		kgo.FetchMaxWait(standbyFetchWait),
	)...)
	if err != nil {
		return nil, fmt.Errorf("runner: standby reader: %w", err)
	}
	s := &standbys{
		m:       m,
		log:     m.log,
		refresh: min(max(m.r.cfg.CommitInterval, minStandbyRefresh), maxStandbyRefresh),
		cl:      cl,
		wake:    make(chan struct{}, 1),
	}
	labels := prometheus.Labels{"job": m.r.topo.Name()}
	s.tasks = register(m.r.metrics.reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "samsa_standby_tasks", Help: "Standby tasks this instance keeps up to date.", ConstLabels: labels,
	}))
	s.lag = register(m.r.metrics.reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "samsa_standby_lag_records", Help: "Changelog records a standby store is behind its owner's last commit, by store and task: about what a failover to this instance restores.", ConstLabels: labels,
	}, []string{"store", "task"}))
	s.applied = register(m.r.metrics.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "samsa_standby_records_total", Help: "Changelog records applied to standby stores, by store and task.", ConstLabels: labels,
	}, []string{"store", "task"}))
	s.mu.assigned = map[stream.TaskID]bool{}
	s.mu.active = map[stream.TaskID]bool{}
	s.mu.failed = map[stream.TaskID]bool{}
	s.mu.open = map[stream.TaskID]*standbyTask{}
	s.mu.byTP = map[topicPartition]*standbyStore{}
	return s, nil
}

// register registers c with reg, or returns the collector of the same
// description registered before (by an earlier Run of the same Runner).
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if prev, ok := are.ExistingCollector.(C); ok {
				return prev
			}
		}
		panic(err) // two collectors of one name and different shapes: a bug
	}
	return c
}

// setAssigned takes the assignment the group gave this instance (see
// assign.Options.OnAssigned): it keeps copies of its standby tasks, and
// of the tasks coming to it, up to date until they start here.
func (s *standbys) setAssigned(a assign.Assignment) {
	if s == nil {
		return
	}
	want := map[stream.TaskID]bool{}
	ids := func(tasks []assign.Task) []string {
		var names []string
		for _, t := range tasks {
			if t.Sub < len(s.m.r.topo.Subtopologies()) && s.m.local.stateful(t.Sub) {
				id := stream.TaskID{Subtopology: t.Sub, Partition: t.Partition}
				want[id] = true
				names = append(names, id.String())
			}
		}
		return names
	}
	standby, incoming := ids(a.Standby), ids(a.Incoming)
	ids(a.Active) // until they start here
	s.mu.Lock()
	changed := !maps.Equal(want, s.mu.assigned)
	s.mu.assigned = want
	clear(s.mu.failed)
	s.mu.Unlock()
	if changed {
		s.log.Info("standby tasks assigned", "standby", strings.Join(standby, ","), "incoming", strings.Join(incoming, ","), "count", len(standby))
		s.signal()
	}
}

// activate is called before task id starts here: a standby copy of it
// closes, leaving its directory, up to date as far as it got, to the task.
func (s *standbys) activate(id stream.TaskID) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.active[id] = true
	if st := s.mu.open[id]; st != nil {
		offsets := map[string]int64{}
		for _, ss := range st.stores {
			offsets[ss.name] = ss.local
		}
		s.log.Info("standby task becomes active", "task", id, "offsets", offsets)
		s.closeLocked(st)
	}
}

// deactivate is called once task id stopped here: if it is a standby task
// of this instance, its standby starts.
func (s *standbys) deactivate(id stream.TaskID) {
	if s == nil {
		return
	}
	s.mu.Lock()
	delete(s.mu.active, id)
	assigned := s.mu.assigned[id]
	s.mu.Unlock()
	if assigned {
		s.signal()
	}
}

// signal wakes the loop to reconcile its standby tasks.
func (s *standbys) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.pollMu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	s.pollMu.Unlock()
}

// start runs the standby tasks until ctx ends or the returned function is
// called, which waits for them to close.
func (s *standbys) start(ctx context.Context) (stop func()) {
	if s == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// run keeps the standby tasks up to date until ctx ends, then closes
// them.
func (s *standbys) run(ctx context.Context) {
	defer s.close()
	var next time.Time // of the next refresh
	var outage bool
	for ctx.Err() == nil {
		if s.reconcile() {
			next = time.Time{} // learn the new tasks' bounds now
		}
		if s.any() && !time.Now().Before(next) {
			err := s.refreshBounds(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !outage:
				s.log.Warn("standby tasks cannot learn the committed changelog offsets; retrying", "error", err)
				outage = true
			case err == nil && outage:
				s.log.Info("standby tasks learn the committed changelog offsets again")
				outage = false
			}
			next = time.Now().Add(s.refresh)
		}
		deadline := next
		if !s.any() {
			deadline = time.Now().Add(time.Hour) // until the assignment changes
		}
		pctx, cancel := context.WithDeadline(ctx, deadline)
		s.pollMu.Lock()
		s.cancel = cancel
		s.pollMu.Unlock()
		select {
		case <-s.wake:
			cancel() // the assignment changed: reconcile first
		default:
		}
		if s.reading() {
			s.apply(s.cl.PollRecords(pctx, restoreBatch))
		} else {
			select {
			case <-pctx.Done():
			case <-s.wake:
			}
		}
		s.pollMu.Lock()
		s.cancel = nil
		s.pollMu.Unlock()
		cancel()
	}
}

// any reports whether a standby task is open.
func (s *standbys) any() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.open) > 0
}

// reading reports whether a standby store's changelog is being read.
func (s *standbys) reading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.mu.byTP {
		if st.reading {
			return true
		}
	}
	return false
}

// reconcile opens the standby tasks assigned and not running here, and
// closes the others. It reports whether it opened any.
func (s *standbys) reconcile() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, st := range s.mu.open {
		if !s.mu.assigned[id] || s.mu.active[id] {
			s.closeLocked(st)
		}
	}
	opened := false
	for _, id := range slices.SortedFunc(maps.Keys(s.mu.assigned), compareTaskIDs) {
		if s.mu.open[id] != nil || s.mu.active[id] || s.mu.failed[id] {
			continue
		}
		if err := s.openLocked(id); err != nil {
			s.log.Warn("cannot keep a standby copy of a task; it restores in full if it moves here", "task", id, "error", err)
			s.mu.failed[id] = true
			continue
		}
		opened = true
	}
	s.tasks.Set(float64(len(s.mu.open)))
	return opened
}

func (s *standbys) openLocked(id stream.TaskID) error {
	db, err := s.m.openTaskDB(id)
	if err != nil {
		return err
	}
	st := &standbyTask{id: id, db: db, opened: time.Now()}
	offsets := map[string]int64{}
	for _, spec := range s.m.r.topo.Subtopologies()[id.Subtopology].Stores {
		if spec.InMemory {
			continue
		}
		local, err := db.Offset(spec.Name)
		if err != nil {
			db.Close()
			return fmt.Errorf("store %s: %w", spec.Name, err)
		}
		st.stores = append(st.stores, &standbyStore{
			t: st, name: spec.Name, topic: s.m.r.topo.ChangelogTopic(spec.Name), mirror: spec.Changelog != "",
			local: local, stored: local, limit: -1,
		})
		offsets[spec.Name] = local
	}
	for _, ss := range st.stores {
		s.mu.byTP[topicPartition{ss.topic, id.Partition}] = ss
	}
	s.mu.open[id] = st
	s.log.Debug("standby task opened", "task", id, "offsets", offsets)
	return nil
}

// closeLocked stops reading a standby task's changelogs and closes its
// directory, applying what was read.
func (s *standbys) closeLocked(st *standbyTask) {
	for _, ss := range st.stores {
		if err := s.flushLocked(ss); err != nil {
			s.log.Warn("standby store: apply changelog records", "task", st.id, "store", ss.name, "error", err)
		}
		s.stopReadingLocked(ss)
		delete(s.mu.byTP, topicPartition{ss.topic, st.id.Partition})
		s.lag.DeleteLabelValues(ss.name, st.id.String())
	}
	if err := st.db.Close(); err != nil {
		s.log.Warn("close a standby task's stores", "task", st.id, "error", err)
	}
	delete(s.mu.open, st.id)
	s.tasks.Set(float64(len(s.mu.open)))
}

// close closes every standby task and the changelog reader.
func (s *standbys) close() {
	s.mu.Lock()
	for _, st := range s.mu.open {
		s.closeLocked(st)
	}
	s.mu.Unlock()
	s.cl.Close()
}

// refreshBounds learns the committed changelog offset of every standby
// store, wipes a store that does not match its changelog (as planRestore
// would), and reads the changelogs of the stores behind.
func (s *standbys) refreshBounds(ctx context.Context) error {
	s.mu.Lock()
	var topics []string
	for tp := range s.mu.byTP {
		topics = append(topics, tp.topic)
	}
	s.mu.Unlock()
	if len(topics) == 0 {
		return nil
	}
	slices.Sort(topics)
	committed, err := s.m.fetchStableOffsets(ctx)
	if err != nil {
		return err
	}
	starts, err := s.m.adm.ListStartOffsets(ctx, slices.Compact(topics)...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list changelog start offsets: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.mu.open {
		meta := s.committedMeta(st.id, committed)
		for _, ss := range st.stores {
			start, ok := starts.Lookup(ss.topic, st.id.Partition)
			if !ok {
				continue // a topic created since: next time
			}
			limit := start.Offset
			if ss.mirror {
				if o, ok := committed.Lookup(ss.topic, st.id.Partition); ok && o.Err == nil && o.At >= 0 {
					limit = o.At
				}
			} else if v, ok := meta[ss.name]; ok {
				limit = v
			}
			limit = max(limit, start.Offset)
			if ss.local == state.NoOffset || ss.local > limit || ss.local < start.Offset {
				if ss.local != state.NoOffset {
					s.log.Warn("wiping standby store: it does not match the committed changelog", "store", ss.name, "task", st.id,
						"local_offset", ss.local, "committed_offset", limit, "changelog_start", start.Offset)
				}
				s.stopReadingLocked(ss)
				ss.b.Reset()
				if err := st.db.Wipe(ss.name); err != nil {
					return fmt.Errorf("runner: standby task %s store %s: %w", st.id, ss.name, err)
				}
				ss.local, ss.stored = start.Offset, state.NoOffset
			}
			ss.limit = limit
			s.readLocked(ss)
		}
		s.noteLocked(st)
	}
	return nil
}

// committedMeta returns the changelog offsets of the last commit of task
// id's input, from its commit metadata.
func (s *standbys) committedMeta(id stream.TaskID, committed kadm.OffsetResponses) map[string]int64 {
	for _, topic := range s.m.r.topo.Subtopologies()[id.Subtopology].Inputs {
		if o, ok := committed.Lookup(topic, id.Partition); ok && o.Err == nil && o.At >= 0 && o.Metadata != "" {
			meta, err := decodeMeta(o.Metadata)
			if err != nil {
				return nil // planRestore says so when the task starts
			}
			return meta
		}
	}
	return nil
}

// readLocked reads ss's changelog partition from its offset while it is
// behind its bound, and stops at the bound.
func (s *standbys) readLocked(ss *standbyStore) {
	s.lag.WithLabelValues(ss.name, ss.t.id.String()).Set(float64(max(0, ss.limit-ss.local)))
	switch {
	case ss.local < ss.limit && !ss.reading:
		s.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{ss.topic: {ss.t.id.Partition: kgo.NewOffset().At(ss.local)}})
		ss.reading = true
	case ss.local >= ss.limit:
		s.stopReadingLocked(ss)
		s.caughtUpLocked(ss.t)
	}
}

func (s *standbys) stopReadingLocked(ss *standbyStore) {
	if ss.reading {
		s.cl.RemoveConsumePartitions(map[string][]int32{ss.topic: {ss.t.id.Partition}})
		ss.reading = false
	}
}

// caughtUpLocked logs, once per standby task, that it first reached its
// owner's last commit.
func (s *standbys) caughtUpLocked(st *standbyTask) {
	if st.caughtUp {
		return
	}
	var applied int64
	for _, ss := range st.stores {
		if ss.limit < 0 || ss.local < ss.limit {
			return
		}
		applied += ss.applied
	}
	st.caughtUp = true
	s.log.Info("standby task caught up", "task", st.id, "records", applied, "took", time.Since(st.opened).Round(time.Millisecond))
}

// apply applies polled changelog records to their standby stores, below
// each store's bound.
func (s *standbys) apply(fs kgo.Fetches) {
	fs.EachError(func(t string, p int32, err error) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Debug("standby changelog read", "topic", t, "partition", p, "error", err)
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	touched := map[*standbyStore]bool{}
	var failed error
	fs.EachRecord(func(r *kgo.Record) {
		ss := s.mu.byTP[topicPartition{r.Topic, r.Partition}]
		if ss == nil || !ss.reading || r.Offset < ss.local || failed != nil {
			return // closed, stopped, or read again after a restart of the partition
		}
		touched[ss] = true
		if r.Offset >= ss.limit {
			ss.local = ss.limit // everything below the bound has been read
			return
		}
		// As a restore: a null key is no row of a table read from a
		// topic, and samsa's own changelogs never hold one.
		if !r.Attrs.IsControl() && r.Key != nil {
			if r.Value == nil {
				ss.b.Delete(ss.name, r.Key)
			} else {
				ss.b.Put(ss.name, r.Key, r.Value)
			}
		}
		ss.local = r.Offset + 1
		if ss.b.Len() >= restoreBatch {
			failed = s.flushLocked(ss)
		}
	})
	for ss := range touched {
		if err := s.flushLocked(ss); err != nil && failed == nil {
			failed = err
		}
		s.readLocked(ss)
		s.noteLocked(ss.t)
	}
	if failed != nil {
		// Each store's offset stays where its data is: the next refresh
		// reads again from there.
		s.log.Warn("standby store: apply changelog records; reading them again", "error", failed)
		for ss := range touched {
			s.stopReadingLocked(ss)
			ss.b.Reset()
			ss.local = ss.stored
		}
	}
}

// flushLocked applies ss's batch with the offset it reached.
func (s *standbys) flushLocked(ss *standbyStore) error {
	if ss.limit < 0 {
		return nil // nothing read yet
	}
	n := ss.b.Len()
	if n == 0 && ss.stored == ss.local {
		return nil
	}
	ss.b.SetOffset(ss.name, ss.local)
	err := ss.t.db.Apply(&ss.b)
	ss.b.Reset()
	if err != nil {
		ss.local = ss.stored // read again from what the store holds
		return fmt.Errorf("runner: standby task %s store %s: %w", ss.t.id, ss.name, err)
	}
	ss.stored = ss.local
	ss.applied += int64(n)
	s.applied.WithLabelValues(ss.name, ss.t.id.String()).Add(float64(n))
	return nil
}

// noteLocked records a standby task's offsets as this instance's warm
// copy of the task.
func (s *standbys) noteLocked(st *standbyTask) {
	offsets := map[string]int64{}
	for _, ss := range st.stores {
		offsets[ss.name] = ss.local
	}
	s.m.local.note(st.id, offsets)
}
