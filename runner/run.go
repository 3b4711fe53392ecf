package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/connectors/kafka"
	"github.com/samsa-go/samsa/internal/assign"
	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
	"github.com/samsa-go/samsa/stream"
)

// maxPollRecords bounds the records taken from the client per loop, which
// bounds how long a rebalance or a due commit waits for the loop: the
// commit interval is checked between batches. 2,000 cost a seventh of the
// stateless throughput in bench/ (0.86x against 1.00x).
const maxPollRecords = 10_000

// Runner runs one instance of a job against Kafka brokers. Instances of one
// job share its tasks through a consumer group named after the job.
type Runner struct {
	topo    *stream.Topology
	cfg     Config
	log     hclog.Logger
	metrics *metrics
	brokers *brokerHealth // whether the brokers can be reached; see health.go
}

// New validates the job and the configuration. cfg.Brokers must be set:
// the embedded broker is started by [Main], not here.
func New(job *stream.Job, cfg Config) (*Runner, error) {
	topo, err := job.Build()
	if err != nil {
		return nil, err
	}
	cfg.EnsureDefaults(job.Name())
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("runner: no brokers given")
	}
	r := &Runner{topo: topo, cfg: cfg, log: cfg.Logger, metrics: newMetrics(job.Name())}
	r.brokers = newBrokerHealth(r.log, r.metrics.reg, job.Name())
	return r, nil
}

// Topology returns the job's topology.
func (r *Runner) Topology() *stream.Topology { return r.topo }

// Run joins the job's consumer group and processes records until ctx is
// cancelled (a clean shutdown, returning nil), a task fails (returning its
// error), or, with Config.UntilEnd, the input is consumed to the end
// offsets seen at start.
//
// Shutdown order: stop polling; let in-flight records finish; flush
// outputs; commit input offsets; close tasks; leave the group.
func (r *Runner) Run(ctx context.Context) (err error) {
	// A refusal of the brokers' ACLs names the group, transactional ID
	// or cluster operation refused (topics are named where they fail).
	defer func() { err = r.denied(err, "", "") }()
	kc := kafkaConfig(r.cfg, "samsa-"+r.topo.Name())
	base, err := kc.Opts()
	if err != nil {
		return err
	}
	base = append(base, kgo.WithHooks(r.brokers))
	// The admin client lists topics it may create a moment later: its
	// metadata must not be cached for kgo's default 5s.
	admCl, err := kgo.NewClient(append(slices.Clone(base), kgo.MetadataMinAge(10*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	defer admCl.Close()
	if err := kafka.Check(ctx, kc, admCl, r.cfg.ConnectTimeout); err != nil {
		return err
	}
	adm := kadm.NewClient(admCl)

	partitions, err := r.checkTopics(ctx, adm)
	if err != nil {
		return err
	}
	if err := r.ensureInternalTopics(ctx, adm, partitions); err != nil {
		return err
	}
	bad, err := r.prepareBadRecords(ctx, adm, partitions)
	if err != nil {
		return err
	}
	// Offset commits name topics by ID on recent brokers.
	sources, err := adm.ListTopics(ctx, r.topo.SourceTopics()...)
	if err != nil {
		return fmt.Errorf("runner: list topics: %w", err)
	}
	topicIDs := map[string][16]byte{}
	for name, d := range sources {
		topicIDs[name] = d.ID
	}

	if r.cfg.HTTPAddr != "" {
		hctx, stop := context.WithCancel(ctx)
		defer stop()
		addr, err := r.serveHTTP(hctx)
		if err != nil {
			return err
		}
		r.log.Info("serving metrics", "url", "http://"+addr+"/metrics",
			"endpoints", "/metrics /healthz /readyz /status /state/{store}")
	}

	m := &member{
		r:          r,
		adm:        adm,
		base:       base,
		topicIDs:   topicIDs,
		log:        r.log,
		partitions: partitions,
		tasks:      map[stream.TaskID]*task{},
		bad:        bad,
	}
	// Under exactly-once the lock also keeps two instances from sharing
	// the transactional ID derived from the state directory.
	if r.stateful() || r.cfg.Processing == ExactlyOnce {
		lock, err := lockStateDir(r.cfg.StateDir)
		if err != nil {
			return err
		}
		defer lock.Close()
		m.blockCache = pebblestore.NewCache(r.cfg.BlockCacheBytes)
		defer m.blockCache.Unref()
	}
	m.local = newLocalStores(r.topo)
	if r.stateful() {
		if err := m.scanLocalStores(ctx); err != nil {
			return err
		}
	}
	// Global tables are read to their end before the group is joined.
	globals, err := m.openGlobals(ctx)
	if err != nil {
		return err
	}
	if globals != nil {
		defer func() {
			if err := globals.close(); err != nil {
				r.log.Warn("close the global tables", "error", err)
			}
		}()
		m.globals = globals.stores
		globals.start(m.fail)
	}
	if r.cfg.UntilEnd {
		if err := m.loadBounds(ctx); err != nil {
			return err
		}
	}

	if m.standbys, err = newStandbys(m); err != nil {
		return err
	}
	defer m.standbys.start(ctx)()

	subs := make([][]string, len(r.topo.Subtopologies()))
	for i, s := range r.topo.Subtopologies() {
		subs[i] = s.Inputs
	}
	opts := append(slices.Clone(base),
		kgo.ConsumerGroup(r.topo.Name()),
		kgo.ConsumeTopics(r.topo.SourceTopics()...),
		kgo.Balancers(assign.New(subs, m.balancerOptions())),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(r.cfg.SessionTimeout),
		// kgo's default of 3s would exceed a short session timeout (an
		// error) or come too close to it: Kafka's rule of a third.
		kgo.HeartbeatInterval(min(3*time.Second, r.cfg.SessionTimeout/3)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // to advance past transaction markers
		kgo.OnPartitionsAssigned(m.assigned),
		kgo.OnPartitionsRevoked(m.revoked),
		kgo.OnPartitionsLost(m.lost),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytesFn(bad.batchMaxBytes), // batches the topics accept
	)
	// The client joins the group in the background: its rebalance
	// callbacks, which lock m.mu, may run before NewClient returns, and
	// must find m.cl set.
	m.mu.Lock()
	if r.cfg.Processing == ExactlyOnce {
		opts = append(opts, m.transactionalOpts()...)
	}
	m.cl, err = kgo.NewClient(opts...)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	r.log.Info("starting", "job", r.topo.Name(), "brokers", strings.Join(r.cfg.Brokers, ","),
		"inputs", strings.Join(r.topo.Inputs(), ","), "outputs", strings.Join(r.topo.Outputs(), ","),
		"processing", r.cfg.Processing, "commit_interval", r.cfg.CommitInterval)
	stopCtx, stop := stopContext(ctx, r.cfg.ShutdownTimeout)
	defer stop()
	m.stopCtx = stopCtx
	var fenced []time.Time
	for {
		err := m.run(ctx)
		if !errors.Is(err, errProducerReplaced) || ctx.Err() != nil {
			return err
		}
		// The brokers aborted the transaction and the client cannot
		// go on with its producer epoch: a new client, a new member
		// of the group, with the tasks closed on their last commit.
		// Fenced again and again means something else is wrong.
		fenced = append(slices.DeleteFunc(fenced, func(at time.Time) bool { return time.Since(at) > time.Minute }), time.Now())
		if len(fenced) > 3 {
			return fmt.Errorf("%w (the fourth time within a minute)", err)
		}
		r.log.Warn("starting a new transactional producer and rejoining the group: the brokers aborted the open transaction and fenced the producer's epoch (a broker restarted, or the transaction outlived its timeout)", "error", err)
		m.resetMember()
		m.mu.Lock()
		m.cl, err = kgo.NewClient(opts...)
		m.mu.Unlock()
		if err != nil {
			return fmt.Errorf("runner: %w", err)
		}
	}
}

// checkTopics returns the partition count of every input and output topic,
// or an error naming the topics that are missing and the sub-topologies
// whose inputs are not co-partitioned.
func (r *Runner) checkTopics(ctx context.Context, adm *kadm.Client) (map[string]int32, error) {
	inputs, outputs := r.topo.Inputs(), r.topo.Outputs()
	all := append(slices.Clone(inputs), outputs...)
	details, err := adm.ListTopics(ctx, all...)
	if err != nil {
		err = r.deniedTopic(ctx, adm, err, all, func(t string) string {
			if slices.Contains(inputs, t) {
				return "Read"
			}
			return "Write"
		})
		return nil, fmt.Errorf("runner: list topics on %s: %w", strings.Join(r.cfg.Brokers, ","), err)
	}
	partitions := map[string]int32{}
	var missing []string
	for _, group := range []struct {
		kind   string
		topics []string
	}{{"input", inputs}, {"output", outputs}} {
		for _, t := range group.topics {
			d, ok := details[t]
			switch {
			case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
				missing = append(missing, fmt.Sprintf("%s topic %q", group.kind, t))
			case d.Err != nil:
				return nil, fmt.Errorf("runner: %s topic %q: %w", group.kind, t, r.denied(d.Err, t, "Describe"))
			default:
				partitions[t] = int32(len(d.Partitions))
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("runner: missing on %s: %s (create them, or run the job's create-topics command)",
			strings.Join(r.cfg.Brokers, ","), strings.Join(missing, ", "))
	}
	engine.ResolveInternal(r.topo, partitions) // repartition topics read with others
	if err := engine.CheckCopartitioned(r.topo, partitions); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	return partitions, nil
}

// stateful reports whether the job has stores (global tables included).
func (r *Runner) stateful() bool {
	if len(r.topo.GlobalTables()) > 0 {
		return true
	}
	for _, sub := range r.topo.Subtopologies() {
		if len(sub.Stores) > 0 {
			return true
		}
	}
	return false
}

// member is one running instance of the job in its consumer group.
type member struct {
	r          *Runner
	cl         *kgo.Client
	txn        txnState // under exactly-once
	adm        *kadm.Client
	base       []kgo.Opt // how to reach the brokers, for restore consumers
	topicIDs   map[string][16]byte
	log        hclog.Logger
	partitions map[string]int32 // every topic of the job, internal ones included
	blockCache *pebble.Cache    // shared by the tasks' Pebble stores
	bad        *badRecords      // what to do with records that fail; see policy.go

	globals *state.GlobalStores // the job's global tables; see global.go

	local    *localStores       // the task stores on local disk, reported to the group; see warm.go
	standbys *standbys          // standby tasks (Config.StandbyReplicas); see standby.go
	paused   map[partKey]bool   // paused while their task waits; see merge.go
	rewinds  map[string][]int32 // inputs to rewind to the last commit; see resetTasksLocked

	// For UntilEnd: where each input partition starts and ends.
	starts, ends kadm.ListedOffsets
	assignedOnce bool

	mu    sync.Mutex // the poll loop and the rebalance callbacks
	tasks map[stream.TaskID]*task

	restorePending atomic.Bool   // tasks wait for their stores' restore
	nextWallClock  atomic.Int64  // unix ms when a wall-clock timer is due; see timers.go
	backlog        atomic.Bool   // tasks have records queued; see processLocked
	drainBy        time.Time     // when tasks stop draining to let the loop commit
	backoff        time.Duration // between retries while the brokers are unreachable; see outwait
	pollMu         sync.Mutex
	pollCancel     context.CancelFunc // ends the poll in progress

	produceErr atomic.Pointer[error] // the first failed output write
	stopCtx    context.Context       // of every write: ends Config.ShutdownTimeout after the run's context
	in, out    atomic.Int64
	lastCommit time.Time
}

// task is one task's processors, its input positions and its stores.
type task struct {
	*engine.Task
	m      *member
	inputs []*input                      // sorted by topic
	err    error                         // the error that stopped the last batch
	out    map[string]prometheus.Counter // records written, by topic; see countOut

	stores       *state.TaskStores        // nil for a stateless task
	logs         map[string]*changelogPos // by store
	restoring    bool                     // stores not restored yet; inputs paused
	stateChanged bool                     // stores flushed since the last commit
}

// close closes the task's processors and stores.
func (t *task) close() error {
	err := t.Close()
	if t.stores != nil {
		err = errors.Join(err, t.stores.Backend().Close())
	}
	return err
}

// input is one input partition of a task.
type input struct {
	records   prometheus.Counter // of the records processed; see countIn
	processed int64              // records processed since countIn last counted them

	topic string
	// next is the offset after the last record processed: what to commit.
	// Offset -1 means unknown.
	next  kgo.EpochOffset
	dirty bool // next moved since the last commit
	queue []*kgo.Record
	merge mergeState // see merge.go
}

func (m *member) taskID(topic string, partition int32) (stream.TaskID, bool) {
	sub, ok := m.r.topo.SubtopologyOf(topic)
	if !ok {
		return stream.TaskID{}, false
	}
	return stream.TaskID{Subtopology: sub.ID, Partition: partition}, true
}

func (m *member) loadBounds(ctx context.Context) error {
	inputs := m.r.topo.Inputs()
	var err error
	if m.starts, err = m.adm.ListStartOffsets(ctx, inputs...); err == nil {
		err = m.starts.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list start offsets: %w", err)
	}
	// The last stable offsets: the end a read_committed consumer reaches.
	if m.ends, err = m.adm.ListCommittedOffsets(ctx, inputs...); err == nil {
		err = m.ends.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list end offsets: %w", err)
	}
	return nil
}

// assigned creates the tasks of newly assigned partitions.
func (m *member) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.assignLocked(ctx, assigned, "tasks assigned")
}

// assignLocked creates the tasks of the partitions in assigned that have
// none, and adds the partitions to their tasks' inputs.
func (m *member) assignLocked(ctx context.Context, assigned map[string][]int32, why string) {
	var committed kadm.OffsetResponses
	if m.r.cfg.UntilEnd {
		var err error
		if committed, err = m.adm.FetchOffsets(ctx, m.r.topo.Name()); err != nil {
			m.log.Warn("fetch committed offsets", "error", err)
		}
	}
	var added []string
	for topic, parts := range assigned {
		for _, p := range parts {
			id, ok := m.taskID(topic, p)
			if !ok {
				continue
			}
			t := m.tasks[id]
			if t == nil {
				var err error
				m.standbys.activate(id) // a standby copy hands its directory over
				if t, err = m.newTask(ctx, id); err != nil {
					m.fail(fmt.Errorf("runner: start task %s: %w", id, err))
					continue
				}
				m.tasks[id] = t
				added = append(added, id.String())
			}
			in := &input{topic: topic, next: kgo.EpochOffset{Epoch: -1, Offset: -1}}
			if m.r.cfg.UntilEnd {
				if o, ok := committed.Lookup(topic, p); ok && o.Err == nil && o.At >= 0 {
					in.next.Offset = o.At
				} else if s, ok := m.starts.Lookup(topic, p); ok {
					in.next.Offset = s.Offset
				}
			}
			t.inputs = append(t.inputs, in)
			slices.SortFunc(t.inputs, func(a, b *input) int { return strings.Compare(a.topic, b.topic) })
		}
	}
	m.assignedOnce = true
	// Tasks with stores wait for their restore, which the loop runs.
	pause := map[string][]int32{}
	for _, t := range m.tasks {
		if t.restoring {
			for _, in := range t.inputs {
				pause[in.topic] = append(pause[in.topic], t.ID().Partition)
			}
		}
		if t.stores != nil {
			t.stores.SetCacheBytes(m.cacheBytesPerTask())
		}
	}
	if len(pause) > 0 {
		m.cl.PauseFetchPartitions(pause)
		m.wake()
	}
	slices.Sort(added)
	m.log.Info(why, "added", strings.Join(added, ","), "owned", len(m.tasks))
}

// newTask creates task id: its stores, if it has any (restored later, by
// the loop), and its processors.
func (m *member) newTask(ctx context.Context, id stream.TaskID) (*task, error) {
	t := &task{m: m}
	specs := m.r.topo.Subtopologies()[id.Subtopology].Stores
	if len(specs) > 0 {
		t.logs = map[string]*changelogPos{}
		for _, s := range specs {
			t.logs[s.Name] = m.newChangelogPos(m.r.topo.ChangelogTopic(s.Name))
		}
		var err error
		if t.stores, err = m.openStores(id, specs, t); err != nil {
			return nil, err
		}
		t.restoring = true
	}
	et, err := engine.NewTask(ctx, m.r.topo, id, m, m.partitions, t.stores, append(m.bad.taskOptions(), m.joinOptions()...)...)
	if err == nil {
		err = et.Init()
	}
	if err != nil {
		if t.stores != nil {
			t.stores.Backend().Close()
		}
		return nil, err
	}
	t.Task = et
	return t, nil
}

// revoked commits what was processed and closes the revoked tasks. Under
// exactly-once the loop allows rebalances only between transactions, so
// there is nothing to commit here.
func (m *member) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.exactlyOnce() {
		m.dropLocked(revoked, "revoked")
		return
	}
	if err := m.commitLocked(ctx); err != nil {
		m.log.Error("commit before giving up tasks failed; their new owner will re-process from the last commit", "error", err)
	}
	m.dropLocked(revoked, "revoked")
}

// lost closes the tasks of partitions taken from us without a chance to
// commit (our session expired): the new owner re-processes from the last
// commit. Under exactly-once the open transaction holds their work, which
// must not commit now that another instance does it again: it aborts, and
// the tasks kept, if any, start again from the last commit.
func (m *member) lost(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	holding := m.exactlyOnce() && m.txn.open && !m.txnIdleLocked()
	m.dropLocked(lost, "lost")
	if holding {
		m.log.Warn("transaction aborted: this instance lost its tasks (paused or cut off past its session timeout, and fenced); processing again from the last commit")
		if err := m.abortLocked(ctx, nil); err != nil {
			m.fail(err)
		}
	}
}

func (m *member) dropLocked(parts map[string][]int32, why string) {
	var dropped []string
	for topic, ps := range parts {
		for _, p := range ps {
			id, ok := m.taskID(topic, p)
			t := m.tasks[id]
			if !ok || t == nil {
				continue
			}
			t.inputs = slices.DeleteFunc(t.inputs, func(in *input) bool { return in.topic == topic })
			if len(t.inputs) == 0 {
				if err := t.close(); err != nil {
					m.log.Warn("close task", "task", id, "error", err)
				}
				delete(m.tasks, id)
				m.standbys.deactivate(id)
				dropped = append(dropped, id.String())
			}
		}
	}
	if len(dropped) > 0 {
		slices.Sort(dropped)
		m.log.Info("tasks "+why, "dropped", strings.Join(dropped, ","), "owned", len(m.tasks))
	}
}

// fail records the first fatal error of a background write or callback;
// the loop stops on it.
func (m *member) fail(err error) { m.produceErr.CompareAndSwap(nil, &err) }

func (m *member) failed() error {
	if p := m.produceErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Emit implements engine.Emitter: it hands the record to the producer.
// Safe for concurrent use by the tasks.
func (m *member) Emit(topic string, partition int32, rec stream.RawRecord) {
	kr := &kgo.Record{Topic: topic, Partition: partition, Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp}
	if len(rec.Headers) > 0 {
		kr.Headers = make([]kgo.RecordHeader, len(rec.Headers))
		for i, h := range rec.Headers {
			kr.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	// Not the run context: a shutdown must still deliver what was
	// processed before it commits, unless the brokers are down past its
	// deadline.
	m.txn.records.Add(1)
	m.cl.Produce(m.stopCtx, kr, m.produced)
}

func (m *member) produced(r *kgo.Record, err error) {
	if err != nil && m.exactlyOnce() {
		switch {
		case abortedByBrokers(err):
			m.abortLater(err, "transaction aborted by the brokers (a broker restarted, or the transaction outlived its timeout)")
			return
		case errors.Is(err, kgo.ErrAborting):
			return // the transaction is being aborted: its writes are dropped
		}
	}
	if err != nil {
		m.fail(fmt.Errorf("runner: write to %s/%d: %w%s", r.Topic, r.Partition, m.r.denied(err, r.Topic, "Write"), tooLargeHint(r, err)))
	}
}

func (m *member) run(ctx context.Context) (err error) {
	m.lastCommit = time.Now()
	defer func() {
		var perr *stream.PanicError
		if errors.As(err, &perr) {
			m.log.Error("panic in a processor", "error", err, "stack", string(perr.Stack))
		}
		// A failed write stops the loop and fails the final commit
		// too: it is reported once.
		if serr := m.shutdown(); serr != nil && (err == nil || !errors.Is(serr, err)) {
			err = errors.Join(err, serr)
		}
	}()
	for {
		if m.restorePending.Swap(false) {
			m.mu.Lock()
			m.observeLocked() // shows the tasks restoring
			err := m.rewindLocked(ctx)
			if err == nil {
				err = m.restoreLocked(ctx)
			}
			m.mu.Unlock()
			if err != nil && ctx.Err() != nil {
				return nil // stopped while restoring
			}
			if err != nil {
				if !m.outwait(ctx, "restore", err) {
					return err
				}
				m.restorePending.Store(true) // resumes where the stores got to
				m.cl.AllowRebalance()
				continue
			}
			m.backoff = 0
			m.nextWallClock.Store(unknownWallClock) // restored stores may hold timers
		}
		recs := m.poll(ctx)
		if recs.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		var ferr error
		deniedTopics := map[string]bool{} // an ACL refusal is reported once per topic
		recs.EachError(func(t string, p int32, e error) {
			if kafka.IsDenied(e) {
				if deniedTopics[t] {
					return
				}
				deniedTopics[t] = true
			}
			ferr = errors.Join(ferr, m.pollError(t, p, e))
		})
		if ferr != nil {
			return ferr
		}
		m.mu.Lock()
		// Under exactly-once a transaction is always open while
		// processing: everything a task writes goes into it.
		// Records polled before the brokers' abort was noticed are
		// from before the rewind to the last commit: dropped.
		recovered, err := m.recoverAbortedLocked(ctx)
		if err == nil {
			err = m.beginLocked(ctx)
		}
		if err == nil && !recovered {
			err = m.processLocked(recs)
		}
		if err == nil {
			err = m.fireWallClockLocked()
		}
		if err == nil {
			err = m.failed()
		}
		// Once ctx is done, shutdown commits, with a deadline of its own.
		if err == nil && ctx.Err() == nil && (time.Since(m.lastCommit) >= m.r.cfg.CommitInterval || m.cachesFullLocked() || m.txn.rebalanceWaiting.Load()) {
			err = m.commitLocked(ctx)
			switch {
			case ctx.Err() != nil:
				err = nil // shutting down: shutdown commits, with its own deadline
			case (!m.exactlyOnce() || !m.txn.open) && transient(err):
				// Nothing is lost: what was processed stays pending and
				// the next commit, an interval later, takes it along.
				m.log.Warn("commit failed: the brokers cannot be reached; retrying at the next commit", "error", err)
				err = nil
			}
		}
		idle := m.txnIdleLocked()
		var done bool
		if err == nil && m.r.cfg.UntilEnd {
			done, err = m.reachedEndLocked(ctx)
			if transient(err) {
				done, err = false, nil // asked again on the next round
			}
		}
		m.observeLocked()
		m.mu.Unlock()
		if err != nil {
			return err
		}
		if done {
			m.log.Info("reached the end offsets seen at start")
			return nil
		}
		// A transaction ends before its tasks can be revoked: a
		// rebalance waits for the commit it triggers.
		if idle {
			m.txn.rebalanceWaiting.Store(false)
			m.cl.AllowRebalance()
		}
	}
}

// untilEndPoll bounds a poll with Config.UntilEnd, so that the loop sees
// it reached the end even when no record is left to arrive.
const untilEndPoll = 200 * time.Millisecond

// poll returns the next records, or none once a commit may be due (or,
// with Config.UntilEnd, after untilEndPoll): the loop must commit, and see
// the end, even when no record arrives.
func (m *member) poll(ctx context.Context) kgo.Fetches {
	if m.restorePending.Load() {
		return nil // restore first
	}
	wait := m.r.cfg.CommitInterval
	if m.r.cfg.UntilEnd {
		wait = min(wait, untilEndPoll)
	}
	wait = max(m.untilWallClock(wait), time.Millisecond)
	if m.backlog.Load() {
		wait = time.Millisecond // records are queued: take what arrived and go on
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m.pollMu.Lock()
	m.pollCancel = cancel
	m.pollMu.Unlock()
	recs := m.cl.PollRecords(pctx, maxPollRecords)
	m.pollMu.Lock()
	m.pollCancel = nil
	m.pollMu.Unlock()
	if ctx.Err() == nil && pctx.Err() != nil && recs.NumRecords() == 0 {
		return nil // nothing arrived in time, or a restore is waiting
	}
	return recs
}

// noteBacklogLocked notes whether a task has records queued that it can
// process without new input.
func (m *member) noteBacklogLocked() {
	backlog := false
	for _, t := range m.tasks {
		backlog = backlog || t.backlogged()
	}
	m.backlog.Store(backlog)
}

// backlogged reports whether the task has records queued that it can
// process now.
func (t *task) backlogged() bool {
	if t.restoring || t.err != nil || t.waiting() {
		return false
	}
	for _, in := range t.inputs {
		if len(in.queue) > 0 {
			return true
		}
	}
	return false
}

// wake makes the loop's current poll return, so that the loop restores
// newly assigned tasks without waiting for records.
func (m *member) wake() {
	m.restorePending.Store(true)
	m.pollMu.Lock()
	if m.pollCancel != nil {
		m.pollCancel()
	}
	m.pollMu.Unlock()
}

// cachesFullLocked reports whether a task's store cache holds more changes
// than it should: the loop then commits early.
func (m *member) cachesFullLocked() bool {
	for _, t := range m.tasks {
		if t.stores != nil && t.stores.NeedsCommit() {
			return true
		}
	}
	return false
}

// processLocked runs the polled records through their tasks, tasks in
// parallel up to Config.Threads, each task's records in order.
func (m *member) processLocked(fetches kgo.Fetches) error {
	m.drainBy = m.lastCommit.Add(m.r.cfg.CommitInterval)
	defer m.noteBacklogLocked()
	var active []*task
	for _, id := range slices.SortedFunc(maps.Keys(m.tasks), compareTaskIDs) {
		if t := m.tasks[id]; t.backlogged() {
			active = append(active, t) // records left by a round cut short
		}
	}
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		id, _ := m.taskID(fp.Topic, fp.Partition)
		t := m.tasks[id]
		if t == nil || t.restoring {
			return // revoked while buffered, or paused: kgo drops these; a guard
		}
		for _, in := range t.inputs {
			if in.topic == fp.Topic {
				if len(in.queue) == 0 && !slices.Contains(active, t) {
					active = append(active, t)
				}
				in.queue = append(in.queue, fp.Records...)
				in.sawFetch(fp.FetchPartition)
			}
		}
	})
	m.mergeLocked(active) // see merge.go
	if len(active) == 0 {
		return nil
	}
	if m.r.cfg.Threads == 1 || len(active) == 1 {
		for _, t := range active {
			m.in.Add(int64(t.drain()))
		}
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, m.r.cfg.Threads)
		for _, t := range active {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				m.in.Add(int64(t.drain()))
			})
		}
		wg.Wait()
	}
	for _, t := range active {
		if t.err != nil {
			return t.err
		}
	}
	return nil
}

// drain processes the task's queued records, counts them and returns how
// many. With several input partitions it takes the record with the lowest
// timestamp next (the first topic by name on a tie), as Kafka Streams
// does, and waits while a partition with nothing queued is behind its end
// (see merge.go). It stops at the first error, leaving it in t.err and the
// failed record queued.
func (t *task) drain() (n int) {
	start := time.Now()
	defer func() {
		t.m.r.metrics.processSeconds.Observe(time.Since(start).Seconds())
		for _, in := range t.inputs {
			t.countIn(in)
		}
		t.TakeEmitted(func(topic string, n int64) {
			t.m.out.Add(n)
			t.countOut(topic, n)
		})
	}()
	if len(t.inputs) == 1 {
		return t.drainInput(t.inputs[0], -1)
	}
	for t.err == nil {
		next := t.nextInput()
		if next == nil {
			break
		}
		n += t.drainInput(next, 1)
		if t.m.drainDue(n) {
			break
		}
	}
	return n
}

// drainDue reports, every few records, whether a task should stop
// draining its queues so that the loop can commit: the commit interval
// is up, or a rebalance waits for the open transaction. The rest stays
// queued for the next round.
func (m *member) drainDue(n int) bool {
	return n > 0 && n%16 == 0 && (time.Now().After(m.drainBy) || m.txn.rebalanceWaiting.Load())
}

// drainInput processes up to limit records of in's queue (all if limit is
// negative) and returns how many.
func (t *task) drainInput(in *input, limit int) (n int) {
	for len(in.queue) > 0 && (limit < 0 || n < limit) && !t.m.drainDue(n) {
		r := in.queue[0]
		if !r.Attrs.IsControl() {
			raw := stream.RawRecord{
				Key: r.Key, Value: r.Value, Timestamp: r.Timestamp,
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
			}
			if len(r.Headers) > 0 {
				raw.Headers = make([]stream.Header, len(r.Headers))
				for i, h := range r.Headers {
					raw.Headers[i] = stream.Header{Key: h.Key, Value: h.Value}
				}
			}
			if err := t.Process(raw); err != nil {
				t.err = err
				return n
			}
			n++
			in.processed++
		}
		in.queue[0] = nil
		in.queue = in.queue[1:]
		in.next = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		in.dirty = true
	}
	if len(in.queue) == 0 {
		in.queue = nil
	}
	return n
}

// commitLocked makes everything processed so far durable:
//
//  1. each task's stores write their changes to their changelogs;
//  2. wait until the brokers acknowledge every output and changelog write;
//  3. commit the input offsets of the records processed, with the
//     changelog offsets they correspond to as commit metadata (under
//     exactly-once: in the transaction, which then commits);
//  4. apply the stores' changes to the local stores, with those changelog
//     offsets.
//
// If any write failed it commits nothing and returns that error. If the
// group refuses the commit (we lost the tasks), the changes stay pending:
// the next owner restores from the last commit. Under exactly-once a
// refused commit aborts the transaction, and every task starts again from
// the last commit.
func (m *member) commitLocked(ctx context.Context) error {
	start := time.Now()
	if m.exactlyOnce() {
		// A transaction must end, one way or the other, once it is
		// being committed: canceling it midway leaves it open on the
		// brokers until it times out.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		defer cancel()
	}
	if m.exactlyOnce() && !m.txn.open {
		if len(m.changedLocked()) == 0 {
			m.lastCommit = time.Now()
			return nil
		}
		if err := m.beginLocked(ctx); err != nil { // for changes made by a restore
			return err
		}
	}
	for _, t := range m.tasks {
		if t.restoring {
			continue
		}
		if err := t.Flush(); err != nil {
			return m.abortLocked(ctx, err)
		}
		if t.stores != nil && len(t.stores.Flush()) > 0 {
			t.stateChanged = true
		}
	}
	if err := m.cl.Flush(ctx); err != nil {
		return m.abortLocked(ctx, fmt.Errorf("runner: flush outputs: %w", err))
	}
	if recovered, err := m.recoverAbortedLocked(ctx); recovered || err != nil {
		return err
	}
	if err := m.failed(); err != nil {
		return m.abortLocked(ctx, err)
	}
	changed := m.changedLocked()
	m.lastCommit = time.Now()
	var ok bool
	var err error
	if m.exactlyOnce() {
		ok, err = m.endTxnLocked(ctx, changed)
	} else {
		ok, err = m.commitOffsetsLocked(ctx, changed)
	}
	if err != nil || !ok {
		return err
	}

	for _, t := range changed {
		for _, in := range t.inputs {
			in.dirty = false
		}
		t.stateChanged = false
		if t.stores == nil {
			continue
		}
		offsets := map[string]int64{}
		for name, pos := range t.logs {
			if spec, _ := m.r.topo.Store(name); spec.Changelog != "" {
				for _, in := range t.inputs {
					if in.topic == spec.Changelog && in.next.Offset >= 0 {
						offsets[name] = in.next.Offset
					}
				}
				continue
			}
			pos.committed = pos.end()
			offsets[name] = pos.committed
		}
		if err := t.stores.Apply(offsets); err != nil {
			return fmt.Errorf("runner: task %s: apply committed changes to the local stores: %w", t.ID(), err)
		}
		m.local.note(t.ID(), offsets)
	}
	m.r.metrics.commits.Inc()
	m.r.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	m.log.Debug("committed", "tasks", len(changed), "took", time.Since(start), "records_in", m.in.Load(), "records_out", m.out.Load())
	return nil
}

// changedLocked returns the tasks with input processed or state changed
// since the last commit, in task order, that know an offset to commit.
func (m *member) changedLocked() []*task {
	var changed []*task
	for _, id := range slices.SortedFunc(maps.Keys(m.tasks), compareTaskIDs) {
		t := m.tasks[id]
		if t.restoring {
			continue
		}
		dirty, known := t.stateChanged, false
		for _, in := range t.inputs {
			dirty = dirty || in.dirty
			known = known || in.next.Offset >= 0
		}
		if dirty && known {
			changed = append(changed, t)
		}
	}
	return changed
}

// commitMeta is the commit metadata of task t: the changelog offset each
// of its stores reflects once the commit succeeds, its stream time, and
// the time of the commit (the status command shows its age).
func (m *member) commitMeta(t *task) *string {
	offsets := map[string]int64{}
	for name, pos := range t.logs {
		if spec, _ := m.r.topo.Store(name); spec.Changelog == "" {
			offsets[name] = pos.end()
		}
	}
	return kmsg.StringPtr(encodeTaskMeta(offsets, t.StreamTime()))
}

// commitOffsetsLocked commits the input offsets of tasks, at-least-once.
// It reports false, with no error, if the group refused the commit.
func (m *member) commitOffsetsLocked(ctx context.Context, tasks []*task) (bool, error) {
	if len(tasks) == 0 {
		return false, nil
	}
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group = m.r.topo.Name()
	req.MemberID, req.Generation = m.cl.GroupMetadata()
	topics := map[string]int{} // index in req.Topics
	for _, t := range tasks {
		meta := m.commitMeta(t)
		for _, in := range t.inputs {
			if in.next.Offset < 0 {
				continue // nothing known to commit yet
			}
			i, ok := topics[in.topic]
			if !ok {
				i = len(req.Topics)
				topics[in.topic] = i
				rt := kmsg.NewOffsetCommitRequestTopic()
				rt.Topic = in.topic
				rt.TopicID = m.topicIDs[in.topic]
				req.Topics = append(req.Topics, rt)
			}
			rp := kmsg.NewOffsetCommitRequestTopicPartition()
			rp.Partition = t.ID().Partition
			rp.Offset = in.next.Offset
			rp.LeaderEpoch = in.next.Epoch
			rp.Metadata = meta
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		}
	}
	resp, err := req.RequestWith(ctx, m.cl)
	if err == nil {
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
					err = errors.Join(err, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, e))
				}
			}
		}
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, kerr.RebalanceInProgress), errors.Is(err, kerr.IllegalGeneration),
		errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.FencedInstanceID):
		// We are no longer the owner: the new owner re-processes from
		// the last commit, which at-least-once allows.
		m.log.Warn("commit refused by the group; tasks will be re-processed by their new owner", "error", err)
		return false, nil
	default:
		return false, fmt.Errorf("runner: commit offsets: %w", err)
	}
}

func compareTaskIDs(a, b stream.TaskID) int {
	if a.Subtopology != b.Subtopology {
		return a.Subtopology - b.Subtopology
	}
	return int(a.Partition - b.Partition)
}

// reachedEndLocked reports whether every input partition this member owns
// has been processed up to the end offsets seen at start. Repartition
// topics have no fixed end: this job writes them. Once the job's own
// inputs are done, their ends are read again, after flushing what this
// member wrote, until the member has caught up with them.
func (m *member) reachedEndLocked(ctx context.Context) (bool, error) {
	if !m.assignedOnce {
		return false, nil
	}
	var internal []string
	for id, t := range m.tasks {
		if t.restoring {
			return false, nil
		}
		for _, in := range t.inputs {
			end, ok := m.ends.Lookup(in.topic, id.Partition)
			if !ok {
				internal = append(internal, in.topic)
				continue
			}
			if in.next.Offset < end.Offset {
				return false, nil
			}
		}
	}
	if len(internal) == 0 {
		return true, nil
	}
	if err := m.cl.Flush(ctx); err != nil {
		return false, err
	}
	slices.Sort(internal)
	internal = slices.Compact(internal)
	starts, err := m.adm.ListStartOffsets(ctx, internal...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return false, fmt.Errorf("runner: list start offsets: %w", err)
	}
	ends, err := m.adm.ListCommittedOffsets(ctx, internal...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return false, fmt.Errorf("runner: list end offsets: %w", err)
	}
	for id, t := range m.tasks {
		for _, in := range t.inputs {
			end, ok := ends.Lookup(in.topic, id.Partition)
			if !ok {
				continue
			}
			next := in.next.Offset
			if next < 0 {
				start, _ := starts.Lookup(in.topic, id.Partition)
				next = start.Offset
			}
			if next < end.Offset {
				return false, nil
			}
		}
	}
	return true, nil
}

// shutdown commits what was processed, closes the tasks and leaves the
// group. It runs whatever ended the loop.
func (m *member) shutdown() error {
	ctx, cancel := context.WithTimeout(m.stopCtx, m.r.cfg.ShutdownTimeout)
	defer cancel()
	m.mu.Lock()
	err := m.commitLocked(ctx)
	if err != nil {
		err = finalCommitError(err, m.r.cfg.ShutdownTimeout)
	}
	for id, t := range m.tasks {
		if cerr := t.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("runner: close task %s: %w", id, cerr))
		}
		delete(m.tasks, id)
	}
	m.mu.Unlock()
	m.cl.CloseAllowingRebalance() // leaves the group
	m.log.Info("stopped", "records_in", m.in.Load(), "records_out", m.out.Load())
	return err
}
