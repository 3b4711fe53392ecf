package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/memstore"
	"github.com/samsa-go/samsa/stream"
)

// changelogMinCompactionLag keeps a changelog's newest records from
// compaction for this long. Records past the last commit of a crashed
// instance are overwritten when its task restarts (see planRestore); until
// then compaction must not let them hide the committed records of the
// same keys.
const changelogMinCompactionLag = time.Hour

// lockStateDir takes the instance's lock on its state directory, so that
// two processes never share task stores.
func lockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("runner: state directory %s (--state-dir): %w", dir, err)
	}
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("runner: state directory %s (--state-dir): lock: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		owner, _ := os.ReadFile(path)
		return nil, fmt.Errorf("runner: state directory %s is in use by another instance (%s); give each instance its own --state-dir",
			dir, strings.TrimSpace(string(owner)))
	}
	f.Truncate(0)
	fmt.Fprintf(f, "pid %d", os.Getpid())
	return f, nil
}

// ensureInternalTopics creates the job's changelog and repartition topics
// that are missing, and checks the partition counts of those that exist.
func (r *Runner) ensureInternalTopics(ctx context.Context, adm *kadm.Client, partitions map[string]int32) error {
	internal := r.topo.Internal()
	if len(internal) == 0 {
		return nil
	}
	engine.ResolveInternal(r.topo, partitions)
	names := make([]string, len(internal))
	for i, it := range internal {
		names[i] = it.Name
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("runner: list internal topics: %w", r.deniedTopic(ctx, adm, err, names, func(string) string { return "Create, Read and Write" }))
	}
	var created []string
	for _, it := range internal {
		want := partitions[it.Name]
		d, ok := details[it.Name]
		if ok && d.Err == nil {
			if got := int32(len(d.Partitions)); got != want {
				return fmt.Errorf("runner: internal topic %q has %d partitions; the job needs %d (delete it, or restore the input topics' partition counts)", it.Name, got, want)
			}
			continue
		}
		if ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("runner: internal topic %q: %w", it.Name, r.denied(d.Err, it.Name, "Describe"))
		}
		configs := map[string]*string{}
		if it.Repartition {
			configs["cleanup.policy"] = kadm.StringPtr("delete")
		} else {
			configs["cleanup.policy"] = kadm.StringPtr("compact")
			configs["min.compaction.lag.ms"] = kadm.StringPtr(strconv.FormatInt(changelogMinCompactionLag.Milliseconds(), 10))
		}
		resp, err := adm.CreateTopic(ctx, want, -1, configs, it.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("runner: create internal topic %q: %w", it.Name, r.denied(err, it.Name, "Create"))
		}
		r.log.Info("created internal topic", "topic", it.Name, "partitions", want, "compacted", !it.Repartition)
		created = append(created, it.Name)
	}
	return waitForTopics(ctx, adm, created)
}

// waitForTopics waits until the brokers' metadata shows topics, which
// trails their creation.
func waitForTopics(ctx context.Context, adm *kadm.Client, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := adm.ListStartOffsets(ctx, topics...)
		if err == nil {
			if err = l.Error(); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("runner: created topics %s do not appear: %w", strings.Join(topics, ", "), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// openStores opens the local stores of task id: a Pebble database under
// the state directory, or memory, per the stores' declarations. A Pebble
// directory that is corrupt or was made for something else is wiped (it
// is restored from the changelogs); one in use by another process is an
// error.
func (m *member) openStores(id stream.TaskID, specs []stream.StoreSpec, t *task) (*state.TaskStores, error) {
	var durable, inMemory []string
	for _, s := range specs {
		if s.InMemory {
			inMemory = append(inMemory, s.Name)
		} else {
			durable = append(durable, s.Name)
		}
	}
	route := &splitBackend{byStore: map[string]state.Backend{}}
	if len(inMemory) > 0 {
		mem := memstore.New()
		route.all = append(route.all, mem)
		for _, s := range inMemory {
			route.byStore[s] = mem
		}
	}
	if len(durable) > 0 {
		db, err := m.openTaskDB(id) // see warm.go
		if err != nil {
			return nil, err
		}
		route.all = append(route.all, db)
		for _, s := range durable {
			route.byStore[s] = db
		}
	}
	return state.NewTaskStores(route, taskLog{m, t}, specs, m.cacheBytesPerTask()), nil
}

func (m *member) cacheBytesPerTask() int {
	return int(m.r.cfg.CacheBytes) / max(1, len(m.tasks))
}

// splitBackend routes each store to its backend: Pebble or memory.
type splitBackend struct {
	byStore map[string]state.Backend
	all     []state.Backend
}

func (s *splitBackend) Get(store string, key []byte) ([]byte, error) {
	return s.byStore[store].Get(store, key)
}

func (s *splitBackend) NewIter(store string, lo, hi []byte) stream.Iterator {
	return s.byStore[store].NewIter(store, lo, hi)
}

func (s *splitBackend) Offset(store string) (int64, error) { return s.byStore[store].Offset(store) }
func (s *splitBackend) Wipe(store string) error            { return s.byStore[store].Wipe(store) }

// Apply applies each backend's part of b; each store's data and offset
// stay atomic, which is all the protocol needs.
func (s *splitBackend) Apply(b *state.Batch) error {
	if len(s.all) == 1 {
		return s.all[0].Apply(b)
	}
	for _, be := range s.all {
		var part state.Batch
		for _, op := range b.Ops {
			if s.byStore[op.Store] == be {
				part.Ops = append(part.Ops, op)
			}
		}
		for store, off := range b.Offsets {
			if s.byStore[store] == be {
				part.SetOffset(store, off)
			}
		}
		if err := be.Apply(&part); err != nil {
			return err
		}
	}
	return nil
}

func (s *splitBackend) Close() error {
	var errs []error
	for _, be := range s.all {
		errs = append(errs, be.Close())
	}
	return errors.Join(errs...)
}

// changelogPos tracks one store's changelog partition.
type changelogPos struct {
	topic string
	// committed is the changelog offset recorded with the task's last
	// input commit: everything before it reflects committed input.
	committed int64
	// next is the offset after the last changelog record the broker
	// acknowledged; -1 before the first.
	next atomic.Int64
	// promise is the produce callback of the store's changelog records.
	promise func(*kgo.Record, error)
}

func (m *member) newChangelogPos(topic string) *changelogPos {
	p := &changelogPos{topic: topic}
	p.next.Store(-1)
	p.promise = func(r *kgo.Record, err error) {
		if err != nil {
			m.produced(r, err)
			return
		}
		p.acked(r)
	}
	return p
}

func (p *changelogPos) acked(r *kgo.Record) {
	for {
		cur := p.next.Load()
		if r.Offset+1 <= cur || p.next.CompareAndSwap(cur, r.Offset+1) {
			return
		}
	}
}

// end returns the changelog offset the store reaches once its flushed
// writes are acknowledged.
func (p *changelogPos) end() int64 { return max(p.committed, p.next.Load()) }

// taskLog writes a task's changelog records.
type taskLog struct {
	m *member
	t *task
}

func (l taskLog) Write(store string, key, value []byte) {
	pos := l.t.logs[store]
	kr := &kgo.Record{Topic: pos.topic, Partition: l.t.ID().Partition, Key: key, Value: value}
	l.m.out.Add(1)
	l.t.countOut(pos.topic, 1)
	l.m.txn.records.Add(1)
	l.m.cl.Produce(l.m.stopCtx, kr, pos.promise)
}

// Offset commit metadata, on each input partition of a task: the
// changelog offset each of the task's stores reflects once the commit
// succeeds, and when the commit was made:
//
//	samsa1;<store>=<offset>;...;@t=<unix milliseconds>;@st=<stream time>
//
// where the stream time, in unix milliseconds, is the task's (see
// stream.Context.StreamTime), restored with its stores.
//
// Fields beginning with "@" are not stores (a store name cannot hold an
// "@"). Readers ignore such fields they do not know, so the format can
// grow without breaking older binaries, which read "@t" as a store no
// task has. This is the one place that writes and parses it.
const metaPrefix = "samsa1"

// decodedMeta is decoded commit metadata.
type decodedMeta struct {
	offsets    map[string]int64 // by store
	at         time.Time        // when the commit was made; zero if unknown
	streamTime time.Time        // the task's stream time; zero if unknown
}

// encodeMeta returns the metadata of a commit made now with the given
// changelog offsets.
func encodeMeta(offsets map[string]int64) string {
	return decodedMeta{offsets: offsets, at: time.Now()}.String()
}

// encodeTaskMeta is encodeMeta with the stream time of the task
// committing, which it goes on from after a restart.
func encodeTaskMeta(offsets map[string]int64, streamTime time.Time) string {
	return decodedMeta{offsets: offsets, at: time.Now(), streamTime: streamTime}.String()
}

// metaStreamTime returns the stream time recorded in commit metadata, or
// the zero time.
func metaStreamTime(meta string) time.Time {
	cm, err := parseMeta(meta)
	if err != nil {
		return time.Time{}
	}
	return cm.streamTime
}

func (cm decodedMeta) String() string {
	var sb strings.Builder
	sb.WriteString(metaPrefix)
	for _, s := range slices.Sorted(maps.Keys(cm.offsets)) {
		fmt.Fprintf(&sb, ";%s=%d", s, cm.offsets[s])
	}
	if !cm.at.IsZero() {
		fmt.Fprintf(&sb, ";@t=%d", cm.at.UnixMilli())
	}
	if !cm.streamTime.IsZero() {
		fmt.Fprintf(&sb, ";@st=%d", cm.streamTime.UnixMilli())
	}
	return sb.String()
}

// parseMeta decodes commit metadata written by encodeMeta.
func parseMeta(meta string) (decodedMeta, error) {
	parts := strings.Split(meta, ";")
	if parts[0] != metaPrefix {
		return decodedMeta{}, fmt.Errorf("not samsa commit metadata: %q", meta)
	}
	cm := decodedMeta{offsets: map[string]int64{}}
	for _, p := range parts[1:] {
		name, val, ok := strings.Cut(p, "=")
		n, err := strconv.ParseInt(val, 10, 64)
		if !ok || err != nil || n < 0 && name != "@st" {
			return decodedMeta{}, fmt.Errorf("bad field %q in commit metadata %q", p, meta)
		}
		switch {
		case name == "@t":
			cm.at = time.UnixMilli(n)
		case name == "@st":
			cm.streamTime = time.UnixMilli(n)
		case strings.HasPrefix(name, "@"):
			// A field of a newer version.
		default:
			cm.offsets[name] = n
		}
	}
	return cm, nil
}

// decodeMeta returns the changelog offsets of commit metadata.
func decodeMeta(meta string) (map[string]int64, error) {
	cm, err := parseMeta(meta)
	return cm.offsets, err
}
