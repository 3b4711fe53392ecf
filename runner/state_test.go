package runner_test

// Integration tests of local state against a Kafka-protocol broker (kfake,
// in the test process): stores restored from their changelogs, the commit
// protocol that keeps the local Pebble stores, the changelogs and the
// committed input offsets consistent, and the exactness of aggregates
// across restarts, crashes, rebalances and damaged state directories.
//
// The jobs count records per key (operators.Count), so that any input
// applied twice or lost shows as a wrong count. Every helper is prefixed
// with "st".

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

const (
	stPartitions = 4
	// stWait bounds every wait of these tests: generous for -race on two
	// cores, far from any hang it would hide.
	stWait = 60 * time.Second
	// stStore is the store of the count jobs.
	stStore = "counts"
)

// stEnv is a kfake cluster for one test, with a client to produce to it and
// read from it.
type stEnv struct {
	t    *testing.T
	c    *kfake.Cluster
	addr string
	cl   *kgo.Client
	adm  *kadm.Client
}

// stSetup starts a one-broker cluster with topics of stPartitions
// partitions, accepting short group session timeouts.
func stSetup(t *testing.T, topics ...string) *stEnv {
	t.Helper()
	return stSetupOpts(t, nil, topics...)
}

// stSetupOpts is stSetup with more cluster options.
func stSetupOpts(t *testing.T, opts []kfake.Opt, topics ...string) *stEnv {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.SeedTopics(stPartitions, topics...),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return &stEnv{t: t, c: c, addr: addr, cl: cl, adm: kadm.NewClient(cl)}
}

// config is a runner configuration for this cluster: frequent commits, a
// short session timeout, small Pebble memory.
func (e *stEnv) config(stateDir string, log hclog.Logger) runner.Config {
	return runner.Config{
		Brokers:         []string{e.addr},
		StateDir:        stateDir,
		CommitInterval:  100 * time.Millisecond,
		SessionTimeout:  time.Second,
		ConnectTimeout:  10 * time.Second,
		CacheBytes:      1 << 20,
		BlockCacheBytes: 4 << 20,
		MemTableSize:    1 << 20,
		Logger:          log,
	}
}

// stKey is the key number i of a count test.
func stKey(i int) string { return fmt.Sprintf("key-%03d", i) }

// produceCounted writes n records to topic with keys drawn at random from
// keys distinct keys (partitioned by key, murmur2) and adds them to want.
func (e *stEnv) produceCounted(topic string, rng *rand.Rand, n, keys int, want map[string]int64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	const batch = 5000
	for lo := 0; lo < n; lo += batch {
		var recs []*kgo.Record
		for i := lo; i < min(lo+batch, n); i++ {
			k := stKey(rng.IntN(keys))
			want[k]++
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(k), Value: fmt.Appendf(nil, "v%d", i)})
		}
		if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			e.t.Fatalf("produce to %s: %v", topic, err)
		}
	}
}

// ends returns the end offset of each partition of topic.
func (e *stEnv) ends(topic string) map[int32]int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	listed, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		e.t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

func stSum(m map[int32]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// committed returns group's committed offset and metadata of each
// partition of topic that has a commit.
func (e *stEnv) committed(group, topic string) (map[int32]int64, map[int32]string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	offs, metas := map[int32]int64{}, map[int32]string{}
	resps, err := e.adm.FetchOffsets(ctx, group)
	if err == nil {
		err = resps.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return offs, metas // no commit yet
	}
	if err != nil {
		e.t.Fatalf("fetch offsets of group %s: %v", group, err)
	}
	for p := range int32(stPartitions) {
		if o, ok := resps.Lookup(topic, p); ok && o.At >= 0 {
			offs[p], metas[p] = o.At, o.Metadata
		}
	}
	return offs, metas
}

// allCommitted reports whether group has committed the end offset of every
// partition of topic.
func (e *stEnv) allCommitted(group, topic string) bool {
	offs, _ := e.committed(group, topic)
	for p, end := range e.ends(topic) {
		if offs[p] != end {
			return false
		}
	}
	return true
}

// groupEmpty reports whether group has no members.
func (e *stEnv) groupEmpty(group string) bool {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	groups, err := e.adm.DescribeGroups(ctx, group)
	if err != nil {
		e.t.Fatalf("describe group %s: %v", group, err)
	}
	g, ok := groups[group]
	return !ok || len(g.Members) == 0
}

// readAll returns every record of topic up to its current end offsets,
// ordered by partition, then offset.
func (e *stEnv) readAll(topic string) []*kgo.Record {
	e.t.Helper()
	ends := e.ends(topic)
	parts := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end > 0 {
			parts[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(parts) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addr),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // transaction markers count towards the ends
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
	if err != nil {
		e.t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	next := map[int32]int64{}
	var out []*kgo.Record
	for {
		done := true
		for p, end := range ends {
			if next[p] < end {
				done = false
			}
		}
		if done {
			break
		}
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			e.t.Fatalf("read %s: %v (read up to %v of %v)", topic, err, next, ends)
		}
		fs.EachError(func(t string, p int32, err error) { e.t.Fatalf("read %s/%d: %v", t, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < ends[r.Partition] && !r.Attrs.IsControl() {
				out = append(out, r)
			}
			next[r.Partition] = r.Offset + 1
		})
	}
	slices.SortFunc(out, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out
}

// stLatest returns the latest value of each key of recs (in partition and
// offset order), decoded as 8-byte big-endian int64s; a tombstone deletes
// the key. It fails the test on a value of another size.
func stLatest(t *testing.T, what string, recs []*kgo.Record) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range recs {
		switch {
		case r.Value == nil:
			delete(out, string(r.Key))
		case len(r.Value) != 8:
			t.Fatalf("%s: %s/%d@%d key %q: value %x is not an 8-byte count", what, r.Topic, r.Partition, r.Offset, r.Key, r.Value)
		default:
			out[string(r.Key)] = int64(binary.BigEndian.Uint64(r.Value))
		}
	}
	return out
}

// stCheckCounts fails the test unless got equals want, naming a few of the
// differences.
func stCheckCounts(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: missing, want %d", k, want[k]))
		} else if g != want[k] {
			diffs = append(diffs, fmt.Sprintf("%s: %d, want %d", k, g, want[k]))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: %d, want no such key", k, g))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%s: %d of %d keys wrong; the first: %s", what, len(diffs), len(want), strings.Join(diffs[:min(8, len(diffs))], "; "))
	}
}

func stTotal(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// stCountJob counts the records of each key of "in" in the store "counts"
// and writes each new count to "out". tap, if not nil, is inserted before
// the count.
func stCountJob(name string, tap func(stream.Stream[string, string]) stream.Stream[string, string]) *stream.Job {
	job := stream.NewJob(name)
	in := stream.Input(job, "in", serde.String, serde.String)
	if tap != nil {
		in = tap(in)
	}
	counts := operators.Count(operators.GroupByKey(in, serde.String, serde.String), stStore)
	stream.Output(counts.ToStream(), "out", serde.String, serde.Int64)
	return job
}

// stWordCountJob is the job of examples/wordcount: lines split into words,
// re-keyed by word through a repartition topic, counted.
func stWordCountJob() *stream.Job {
	job := stream.NewJob("wordcount")
	lines := stream.Input(job, "lines", serde.Bytes, serde.String)
	words := operators.FlatMapValues(lines, stSplit)
	byWord := operators.GroupBy(words, "words", func(_ []byte, w string) string { return w }, serde.String, serde.String)
	counts := operators.Count(byWord, "counts")
	stream.Output(counts.ToStream(), "word-counts", serde.String, serde.Int64)
	return job
}

func stSplit(line string) []string {
	return strings.FieldsFunc(strings.ToLower(line), func(r rune) bool { return !unicode.IsLetter(r) && r != '\'' })
}

// stRunToEnd runs job with UntilEnd, failing the test if Run fails or does
// not return within stWait.
func stRunToEnd(t *testing.T, job *stream.Job, cfg runner.Config) {
	t.Helper()
	cfg.UntilEnd = true
	r, err := runner.New(job, cfg)
	if err != nil {
		t.Fatalf("runner.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Run with UntilEnd did not reach the end within %s", stWait)
	}
}

// stRunning is a Runner's Run in a goroutine.
type stRunning struct {
	cancel context.CancelFunc
	done   chan error
}

// stStart runs job in the background; the test's cleanup stops it.
func stStart(t *testing.T, job *stream.Job, cfg runner.Config) *stRunning {
	t.Helper()
	r, err := runner.New(job, cfg)
	if err != nil {
		t.Fatalf("runner.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rn := &stRunning{cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-rn.done:
			rn.done <- err
		case <-time.After(stWait):
			t.Errorf("Run did not return within %s of being cancelled", stWait)
		}
	})
	return rn
}

// result returns Run's result if it returned within timeout.
func (rn *stRunning) result(timeout time.Duration) (err error, returned bool) {
	select {
	case err := <-rn.done:
		rn.done <- err // for the cleanup
		return err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// stop cancels Run and fails the test unless it returns nil in time.
func (rn *stRunning) stop(t *testing.T, what string) {
	t.Helper()
	rn.cancel()
	err, ok := rn.result(stWait)
	switch {
	case !ok:
		t.Fatalf("%s: Run did not return within %s of being cancelled", what, stWait)
	case err != nil:
		t.Fatalf("%s: Run: %v", what, err)
	}
}

// stLog collects a runner's logs, in JSON, to check what it did. With -v
// it also sends them to the test log; warnings and errors always go there.
type stLog struct {
	mu      sync.Mutex
	t       *testing.T
	entries []stEntry
	closed  bool
}

// stEntry is one log line: its message and its fields.
type stEntry map[string]any

func (e stEntry) msg() string   { s, _ := e["@message"].(string); return s }
func (e stEntry) level() string { s, _ := e["@level"].(string); return s }

// int returns the integer field name, or -1.
func (e stEntry) int(name string) int64 {
	if n, ok := e[name].(json.Number); ok {
		if v, err := n.Int64(); err == nil {
			return v
		}
	}
	return -1
}

// task returns the entry's task as "sub_partition".
func (e stEntry) task() string {
	switch v := e["task"].(type) {
	case string:
		return v
	case map[string]any:
		return fmt.Sprintf("%v_%v", v["Subtopology"], v["Partition"])
	}
	return fmt.Sprint(e["task"])
}

func stNewLog(t *testing.T) *stLog {
	l := &stLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.closed = true
	})
	return l
}

// logger returns a logger writing to l.
func (l *stLog) logger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, JSONFormat: true, Output: l})
}

func (l *stLog) Write(p []byte) (int, error) {
	entries := stParseLog(string(p))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, entries...)
	if !l.closed {
		for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
			if testing.Verbose() || strings.Contains(line, `"@level":"warn"`) || strings.Contains(line, `"@level":"error"`) {
				l.t.Log(line)
			}
		}
	}
	return len(p), nil
}

// stParseLog parses JSON log lines, skipping lines that are not JSON.
func stParseLog(s string) []stEntry {
	var out []stEntry
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		var e stEntry
		if d.Decode(&e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// find returns the entries with message msg.
func (l *stLog) find(msg string) []stEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return stFind(l.entries, msg)
}

// reset forgets the entries so far.
func (l *stLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = nil
}

func stFind(entries []stEntry, msg string) []stEntry {
	var out []stEntry
	for _, e := range entries {
		if e.msg() == msg {
			out = append(out, e)
		}
	}
	return out
}

// stRestored sums the records of the runner's "restored store" entries,
// by task.
func stRestored(entries []stEntry) (total int64, byTask map[string]int64) {
	byTask = map[string]int64{}
	for _, e := range stFind(entries, "restored store") {
		total += e.int("records")
		byTask[e.task()] += e.int("records")
	}
	return total, byTask
}

// stStoreContents opens the Pebble store directory of each task
// "<sub>_<p>" of job under stateDir (the runner must be stopped) and
// returns the union of their "counts" stores, decoded as counts, and each
// task's store offset.
func stStoreContents(t *testing.T, stateDir, job string, sub int) (map[string]int64, map[int32]int64) {
	t.Helper()
	raw, offsets := stStoreRaw(t, stateDir, job, sub, stStore)
	counts := map[string]int64{}
	for k, v := range raw {
		if len(v) != 8 {
			t.Fatalf("store value %x of key %q is not an 8-byte count", v, k)
		}
		counts[k] = int64(binary.BigEndian.Uint64(v))
	}
	return counts, offsets
}

// stStoreRaw returns the union of the contents of store in the Pebble
// store directories of the tasks "<sub>_<p>" of job under stateDir, and
// each task's offset of the store.
func stStoreRaw(t *testing.T, stateDir, job string, sub int, store string) (map[string][]byte, map[int32]int64) {
	t.Helper()
	contents, offsets := map[string][]byte{}, map[int32]int64{}
	for p := range int32(stPartitions) {
		task := fmt.Sprintf("%d_%d", sub, p)
		db, err := pebblestore.Open(filepath.Join(stateDir, "tasks", task),
			pebblestore.Identity{Job: job, Task: task, Partitions: stPartitions},
			pebblestore.Options{MemTableSize: 1 << 20, CacheSize: 1 << 20})
		if err != nil {
			t.Fatalf("open the store of task %s: %v", task, err)
		}
		it := db.NewIter(store, nil, nil)
		for it.Next() {
			k := string(it.Key())
			if _, dup := contents[k]; dup {
				t.Errorf("key %q is in the stores of two tasks", k)
			}
			contents[k] = it.Value()
		}
		if err := errors.Join(it.Err(), it.Close()); err != nil {
			t.Fatalf("task %s: iterate: %v", task, err)
		}
		if offsets[p], err = db.Offset(store); err != nil {
			t.Fatalf("task %s: store offset: %v", task, err)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("task %s: close: %v", task, err)
		}
	}
	return contents, offsets
}

// checkLocalStores checks that after a clean stop each task's local store
// holds exactly want's keys of its partition, and reflects exactly the
// changelog offset committed with the input offsets, which is the
// changelog's end.
func (e *stEnv) checkLocalStores(t *testing.T, stateDir, job, input string, sub int, want map[string]int64) {
	t.Helper()
	counts, offsets := stStoreContents(t, stateDir, job, sub)
	stCheckCounts(t, "the local Pebble stores", counts, want)
	changelogEnds := e.ends(job + "-" + stStore + "-changelog")
	_, metas := e.committed(job, input)
	for p := range int32(stPartitions) {
		fields := strings.Split(metas[p], ";")
		if wantField := fmt.Sprintf("%s=%d", stStore, changelogEnds[p]); fields[0] != "samsa1" || !slices.Contains(fields[1:], wantField) {
			t.Errorf("partition %d: commit metadata %q, want samsa1 with %s (the changelog's end)", p, metas[p], wantField)
		}
		if offsets[p] != changelogEnds[p] {
			t.Errorf("task %d_%d: the local store reflects changelog offset %d, want the changelog's end %d", sub, p, offsets[p], changelogEnds[p])
		}
	}
}

// checkChangelogAndOutput checks that the changelog's latest value of each
// key, and the last output of each key, are the exact counts.
func (e *stEnv) checkChangelogAndOutput(t *testing.T, job, output string, want map[string]int64) {
	t.Helper()
	stCheckCounts(t, "the changelog's latest values", stLatest(t, "changelog", e.readAll(job+"-"+stStore+"-changelog")), want)
	stCheckCounts(t, "the last output of each key", stLatest(t, output, e.readAll(output)), want)
}

// 1. A keyed count (no repartition) run to the end of its input: the
// changelog, the output, the local stores and the commit metadata agree
// with the exact counts.
func TestStateKeyedCountExact(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(1, 1))
	want := map[string]int64{}
	const n = 20_000
	e.produceCounted("in", rng, n, 500, want)

	dir := t.TempDir()
	log := stNewLog(t)
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, log.logger("counter")))

	e.checkChangelogAndOutput(t, "counter", "out", want)
	if got := stSum(e.ends("out")); got != n {
		t.Errorf("%d output records, want one per input: %d", got, n)
	}
	// One changelog record per key changed in a commit interval, so at
	// most one per input.
	if got := stSum(e.ends("counter-counts-changelog")); got > n || got < int64(len(want)) {
		t.Errorf("%d changelog records for %d inputs of %d keys", got, n, len(want))
	}
	e.checkLocalStores(t, dir, "counter", "in", 0, want)
	if restored, _ := stRestored(log.find("restored store")); restored != 0 {
		t.Errorf("a first run restored %d records, want 0", restored)
	}
}

// 2. A clean restart on the same state directory restores nothing (the
// local stores are at the committed changelog offsets) and counts on
// exactly.
func TestStateCleanRestartRestoresNothing(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(2, 2))
	want := map[string]int64{}
	e.produceCounted("in", rng, 8_000, 500, want)
	dir := t.TempDir()
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, stNewLog(t).logger("run1")))
	e.checkChangelogAndOutput(t, "counter", "out", want)

	e.produceCounted("in", rng, 8_000, 500, want)
	log := stNewLog(t)
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, log.logger("run2")))
	e.checkChangelogAndOutput(t, "counter", "out", want)
	e.checkLocalStores(t, dir, "counter", "in", 0, want)

	restores := log.find("restored store")
	if len(restores) != stPartitions {
		t.Errorf("the restart logged %d store restores, want one per task: %d", len(restores), stPartitions)
	}
	for _, r := range restores {
		if r.int("records") != 0 {
			t.Errorf("task %s: a clean restart restored %d records (from %d to %d), want 0", r.task(), r.int("records"), r.int("from"), r.int("to"))
		}
	}
	if w := log.find("rewriting keys changed after the last commit of a previous owner"); len(w) > 0 {
		t.Errorf("a clean restart rewrote keys: %v", w)
	}
}

// 3. A fresh instance (empty state directory, same group) restores every
// task's store from its changelog and counts on exactly.
func TestStateFreshInstanceRestoresAll(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(3, 3))
	want := map[string]int64{}
	e.produceCounted("in", rng, 8_000, 500, want)
	stRunToEnd(t, stCountJob("counter", nil), e.config(t.TempDir(), stNewLog(t).logger("run1")))

	changelog := e.ends("counter-counts-changelog")
	e.produceCounted("in", rng, 8_000, 500, want)
	fresh := t.TempDir()
	log := stNewLog(t)
	stRunToEnd(t, stCountJob("counter", nil), e.config(fresh, log.logger("run2")))
	e.checkChangelogAndOutput(t, "counter", "out", want)
	e.checkLocalStores(t, fresh, "counter", "in", 0, want)

	total, byTask := stRestored(log.find("restored store"))
	for p, end := range changelog {
		if got := byTask[fmt.Sprintf("0_%d", p)]; got != end {
			t.Errorf("task 0_%d restored %d records, want its whole changelog: %d", p, got, end)
		}
	}
	t.Logf("the fresh instance restored %d changelog records", total)
}

// The compensation of a crashed instance's changelog tail: records past
// the changelog offset committed with the input offsets do not reflect
// committed input. A restart must restore only up to that offset and
// write each of their keys again with its committed value (a tombstone
// for a key the store does not hold), so that the changelog's latest
// value per key is right again, for this and for any later restore.
func TestStateUncommittedChangelogTailIsOverwritten(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(9, 9))
	want := map[string]int64{}
	e.produceCounted("in", rng, 5_000, 200, want)
	dir := t.TempDir()
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, stNewLog(t).logger("run1")))

	// What an instance that died before its commit would leave: changes of
	// existing keys and of keys that do not exist, in every partition.
	const changelog = "counter-counts-changelog"
	before := e.ends(changelog)
	var bogus []*kgo.Record
	for p := range int32(stPartitions) {
		bogus = append(bogus,
			&kgo.Record{Topic: changelog, Partition: p, Key: []byte(stKey(int(p))), Value: binary.BigEndian.AppendUint64(nil, 1_000_000)},
			&kgo.Record{Topic: changelog, Partition: p, Key: fmt.Appendf(nil, "ghost-%d", p), Value: binary.BigEndian.AppendUint64(nil, 7)},
			&kgo.Record{Topic: changelog, Partition: p, Key: fmt.Appendf(nil, "ghost-%d", p), Value: binary.BigEndian.AppendUint64(nil, 8)},
		)
	}
	// The bogus records go to the partitions named, whatever their keys.
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	manual, err := kgo.NewClient(kgo.SeedBrokers(e.addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	if err := manual.ProduceSync(ctx, bogus...).FirstErr(); err != nil {
		t.Fatalf("produce to the changelog: %v", err)
	}

	// A restart with new input, on the same state directory.
	e.produceCounted("in", rng, 2_000, 200, want)
	log := stNewLog(t)
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, log.logger("run2")))
	e.checkChangelogAndOutput(t, "counter", "out", want)
	e.checkLocalStores(t, dir, "counter", "in", 0, want)
	rewrites := log.find("rewriting keys changed after the last commit of a previous owner")
	if len(rewrites) != stPartitions {
		t.Errorf("%d tasks rewrote keys, want all %d", len(rewrites), stPartitions)
	}
	for _, r := range rewrites {
		if r.int("records") != 3 || r.int("keys") != 2 {
			t.Errorf("task %s rewrote %d keys of %d records, want 2 keys of 3 records", r.task(), r.int("keys"), r.int("records"))
		}
	}
	for _, r := range log.find("restored store") {
		var p int32
		fmt.Sscanf(r.task(), "0_%d", &p)
		if r.int("to") != before[p] {
			t.Errorf("task %s restored up to changelog offset %d, want the committed %d", r.task(), r.int("to"), before[p])
		}
	}

	// A fresh instance restores the changelog whole, bogus records
	// included, and the rewrites after them: still exact, nothing to
	// rewrite.
	fresh := t.TempDir()
	log = stNewLog(t)
	stRunToEnd(t, stCountJob("counter", nil), e.config(fresh, log.logger("run3")))
	stCheckCounts(t, "the fresh instance's stores", func() map[string]int64 { c, _ := stStoreContents(t, fresh, "counter", 0); return c }(), want)
	if w := log.find("rewriting keys changed after the last commit of a previous owner"); len(w) > 0 {
		t.Errorf("after the rewrites were committed, a restart rewrote keys again: %d tasks", len(w))
	}
}

// Restoring from a compacted changelog, whose offsets have gaps: a fresh
// instance restores what compaction left, quickly, and counts on exactly.
func TestStateRestoreFromCompactedChangelog(t *testing.T) {
	t.Parallel()
	e := stSetupOpts(t, []kfake.Opt{kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "50"})}, "in", "out")
	rng := rand.New(rand.NewPCG(10, 10))
	want := map[string]int64{}
	dir := t.TempDir()
	// Each run commits at least once: at least one changelog record per
	// key it changed.
	for run := range 4 {
		e.produceCounted("in", rng, 1_500, 60, want)
		stRunToEnd(t, stCountJob("compacted", nil), e.config(dir, stNewLog(t).logger(fmt.Sprintf("run%d", run+1))))
	}
	const changelog = "compacted-counts-changelog"
	ends := e.ends(changelog)
	var present int
	waitWithin(t, stWait, "the broker to compact the changelog", func() bool {
		present = len(e.readAll(changelog))
		return int64(present) < stSum(ends)
	})
	e.checkChangelogAndOutput(t, "compacted", "out", want)

	e.produceCounted("in", rng, 1_500, 60, want)
	fresh := t.TempDir()
	log := stNewLog(t)
	began := time.Now()
	stRunToEnd(t, stCountJob("compacted", nil), e.config(fresh, log.logger("fresh")))
	took := time.Since(began)
	e.checkChangelogAndOutput(t, "compacted", "out", want)
	e.checkLocalStores(t, fresh, "compacted", "in", 0, want)
	restored, _ := stRestored(log.find("restored store"))
	if restored > int64(present) {
		t.Errorf("the fresh instance restored %d records; the compacted changelog holds %d", restored, present)
	}
	t.Logf("changelog: %d offsets, %d records after compaction; the fresh instance restored %d records and ran in %s",
		stSum(ends), present, restored, took.Round(time.Millisecond))
	if took > 4*time.Second {
		t.Errorf("the fresh instance took %s: a restore stalled on the compacted offsets?", took)
	}
}

// A table read from a topic (TableInput) uses the topic as its changelog:
// its store reflects the topic up to the committed input offset, a fresh
// instance restores it from the topic, and a clean restart restores
// nothing.
func TestStateTableInputRestore(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "table", "out")
	rng := rand.New(rand.NewPCG(11, 11))
	want := map[string]string{}
	produce := func(n int) {
		t.Helper()
		var recs []*kgo.Record
		for i := range n {
			k := stKey(rng.IntN(200))
			r := &kgo.Record{Topic: "table", Key: []byte(k)}
			if rng.IntN(5) == 0 {
				delete(want, k) // a tombstone
			} else {
				r.Value = fmt.Appendf(nil, "value-%d", i)
				want[k] = string(r.Value)
			}
			recs = append(recs, r)
		}
		ctx, cancel := context.WithTimeout(context.Background(), stWait)
		defer cancel()
		if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	job := func() *stream.Job {
		job := stream.NewJob("tabler")
		tbl := stream.TableInput(job, "table", serde.String, serde.String)
		stream.Output(tbl.ToStream(), "out", serde.String, serde.String)
		return job
	}
	check := func(dir string) {
		t.Helper()
		got, offsets := stStoreRaw(t, dir, "tabler", 0, "table")
		gotS := map[string]string{}
		for k, v := range got {
			gotS[k] = string(v)
		}
		if !maps.Equal(gotS, want) {
			t.Errorf("the table's stores hold %d keys, want %d; equal: false", len(gotS), len(want))
		}
		ends := e.ends("table")
		committed, _ := e.committed("tabler", "table")
		for p := range int32(stPartitions) {
			if offsets[p] != ends[p] || committed[p] != ends[p] {
				t.Errorf("partition %d: store offset %d, committed offset %d, want both the topic's end %d", p, offsets[p], committed[p], ends[p])
			}
		}
	}

	produce(3_000)
	dir := t.TempDir()
	stRunToEnd(t, job(), e.config(dir, stNewLog(t).logger("run1")))
	check(dir)

	committed, _ := e.committed("tabler", "table")
	produce(2_000)
	fresh := t.TempDir()
	log := stNewLog(t)
	stRunToEnd(t, job(), e.config(fresh, log.logger("fresh")))
	check(fresh)
	if restored, _ := stRestored(log.find("restored store")); restored != stSum(committed) {
		t.Errorf("the fresh instance restored %d records of the table, want those up to the committed offsets: %d", restored, stSum(committed))
	}

	produce(1_000)
	log = stNewLog(t)
	stRunToEnd(t, job(), e.config(fresh, log.logger("restart")))
	check(fresh)
	if restored, _ := stRestored(log.find("restored store")); restored != 0 {
		t.Errorf("a clean restart restored %d records of the table, want 0", restored)
	}
}

// stMemCounter counts the records of each key in an in-memory store and
// passes each new count on.
type stMemCounter struct {
	next  stream.Processor[string, int64]
	store *state.KeyValue[string, int64]
}

func (c *stMemCounter) Init(ctx stream.Context) error {
	s, err := ctx.Store("memcounts")
	if err != nil {
		return err
	}
	c.store = state.Typed(s, serde.String, serde.Int64)
	return nil
}

func (c *stMemCounter) Process(ctx stream.Context, r stream.Record[string, string]) error {
	n, _, err := c.store.Get(r.Key)
	if err != nil {
		return err
	}
	n++
	if err := c.store.Put(r.Key, n); err != nil {
		return err
	}
	return c.next.Process(ctx, stream.Record[string, int64]{Key: r.Key, Value: n, Timestamp: r.Timestamp})
}

// A task with a Pebble store and an in-memory store: the in-memory one is
// restored from its changelog in full at every start, the Pebble one only
// as far as its local copy lags; both stay exact.
func TestStateInMemoryAndPebbleStores(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out", "memout")
	rng := rand.New(rand.NewPCG(12, 12))
	want := map[string]int64{}
	job := func() *stream.Job {
		return stCountJob("mixed", func(in stream.Stream[string, string]) stream.Stream[string, string] {
			mem := stream.Via(in, "mem-count", func(next stream.Processor[string, int64]) stream.Processor[string, string] {
				return &stMemCounter{next: next}
			}, stream.WithStores(stream.StoreSpec{Name: "memcounts", InMemory: true}))
			stream.Output(mem, "memout", serde.String, serde.Int64)
			return in
		})
	}
	check := func() {
		t.Helper()
		e.checkChangelogAndOutput(t, "mixed", "out", want)
		stCheckCounts(t, "the in-memory store's changelog", stLatest(t, "changelog", e.readAll("mixed-memcounts-changelog")), want)
		stCheckCounts(t, "the last output of the in-memory count", stLatest(t, "memout", e.readAll("memout")), want)
	}
	dir := t.TempDir()
	e.produceCounted("in", rng, 5_000, 300, want)
	stRunToEnd(t, job(), e.config(dir, stNewLog(t).logger("run1")))
	check()

	memChangelog := e.ends("mixed-memcounts-changelog")
	e.produceCounted("in", rng, 5_000, 300, want)
	log := stNewLog(t)
	stRunToEnd(t, job(), e.config(dir, log.logger("run2")))
	check()
	e.checkLocalStores(t, dir, "mixed", "in", 0, want)
	for _, r := range log.find("restored store") {
		var p int32
		fmt.Sscanf(r.task(), "0_%d", &p)
		switch store, _ := r["store"].(string); store {
		case "memcounts":
			if r.int("records") != memChangelog[p] {
				t.Errorf("task %s restored %d records of the in-memory store, want its whole changelog: %d", r.task(), r.int("records"), memChangelog[p])
			}
		case stStore:
			if r.int("records") != 0 {
				t.Errorf("task %s restored %d records of the Pebble store after a clean stop, want 0", r.task(), r.int("records"))
			}
		default:
			t.Errorf("restored unknown store %q", store)
		}
	}
}

// Commits the group refuses (as during a rebalance) leave the flushed
// changes pending: the next commit covers them, and the local stores and
// the changelog end up exact and in step.
func TestStateRefusedCommits(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(13, 13))
	want := map[string]int64{}
	const refuse = 4
	var refused atomic.Int32
	e.c.ControlKey(kmsg.OffsetCommit.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.OffsetCommitRequest)
		if req.Group != "refused" || refused.Load() >= refuse {
			return nil, nil, false
		}
		e.c.KeepControl()
		refused.Add(1)
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		resp.Version = req.Version
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.RebalanceInProgress.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	dir := t.TempDir()
	log := stNewLog(t)
	r := stStart(t, stCountJob("refused", nil), e.config(dir, log.logger("A")))
	for refused.Load() < refuse {
		e.produceCounted("in", rng, 500, 200, want)
		waitWithin(t, stWait, "a commit", func() bool {
			return refused.Load() >= refuse || len(log.find("commit refused by the group; tasks will be re-processed by their new owner")) > 0
		})
		time.Sleep(50 * time.Millisecond)
	}
	e.produceCounted("in", rng, 500, 200, want)
	waitWithin(t, stWait, "the job to commit all its input", func() bool { return e.allCommitted("refused", "in") })
	r.stop(t, "A")
	if n := len(log.find("commit refused by the group; tasks will be re-processed by their new owner")); n < refuse {
		t.Errorf("the runner logged %d refused commits, want %d", n, refuse)
	}
	e.checkChangelogAndOutput(t, "refused", "out", want)
	e.checkLocalStores(t, dir, "refused", "in", 0, want)

	// A fresh instance restores what the commits covered.
	e.produceCounted("in", rng, 500, 200, want)
	stRunToEnd(t, stCountJob("refused", nil), e.config(t.TempDir(), stNewLog(t).logger("fresh")))
	e.checkChangelogAndOutput(t, "refused", "out", want)
}

// 5. Tasks move between instances: B joins A's group and restores the
// tasks it takes from their changelogs; when B leaves, A takes them back
// and restores only what B added since A had them. The counts stay exact.
func TestStateTaskMovesToSecondInstance(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(5, 5))
	want := map[string]int64{}
	e.produceCounted("in", rng, 10_000, 500, want)

	dirA, dirB := t.TempDir(), t.TempDir()
	logA, logB := stNewLog(t), stNewLog(t)
	cfgA, cfgB := e.config(dirA, logA.logger("A")), e.config(dirB, logB.logger("B"))
	// A small record cache, so that reads go through Pebble too.
	cfgA.CacheBytes, cfgB.CacheBytes = 16<<10, 16<<10
	a := stStart(t, stCountJob("mover", nil), cfgA)
	waitWithin(t, stWait, "A to process the first input", func() bool { return e.allCommitted("mover", "in") })

	b := stStart(t, stCountJob("mover", nil), cfgB)
	waitWithin(t, stWait, "B to restore the tasks it takes over", func() bool {
		return len(logB.find("restored store")) >= 1
	})
	e.produceCounted("in", rng, 10_000, 500, want)
	waitWithin(t, stWait, "A and B to process the second input", func() bool { return e.allCommitted("mover", "in") })

	restoredB, byTaskB := stRestored(logB.find("restored store"))
	if restoredB == 0 {
		t.Errorf("B restored no records; the tasks it took had state")
	}
	if n := len(logB.find("restored store")); n == 0 || n == stPartitions {
		t.Errorf("B restored %d tasks; want some, not all %d", n, stPartitions)
	}
	if len(logA.find("tasks revoked")) == 0 {
		t.Errorf("A logged no revoked tasks")
	}
	t.Logf("B took tasks %v, restoring %d records", byTaskB, restoredB)

	// B leaves: A takes its tasks back, its local stores of them behind by
	// what B added.
	logA.reset()
	b.stop(t, "B")
	e.produceCounted("in", rng, 5_000, 500, want)
	waitWithin(t, stWait, "A to process the third input", func() bool { return e.allCommitted("mover", "in") })
	a.stop(t, "A")

	e.checkChangelogAndOutput(t, "mover", "out", want)
	for _, r := range logA.find("restored store") {
		if _, tookIt := byTaskB[r.task()]; !tookIt {
			continue
		}
		if r.int("from") <= 0 || r.int("records") <= 0 {
			t.Errorf("A took task %s back restoring %d records from changelog offset %d; want only the records B added, from A's own offset", r.task(), r.int("records"), r.int("from"))
		}
	}
	e.checkLocalStores(t, dirA, "mover", "in", 0, want)
}

// 6. A damaged or foreign store directory is wiped and restored from the
// changelogs: Pebble files overwritten with garbage; a directory made for
// another job, or for another partition count; Pebble files without the
// identity file.
func TestStateCorruptStoreRecovery(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(6, 6))
	want := map[string]int64{}
	e.produceCounted("in", rng, 6_000, 300, want)
	// A path with "lock" in it: no mistaking corruption for a lock held.
	dir := filepath.Join(t.TempDir(), "blocklist")
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, stNewLog(t).logger("run1")))
	taskDir := func(p int) string { return filepath.Join(dir, "tasks", fmt.Sprintf("0_%d", p)) }

	// Garbage over the Pebble files of every task: all of them in task 0,
	// only the tables in task 1, only the manifest in 2, CURRENT in 3.
	garbage := bytes.Repeat([]byte("not a pebble file "), 300)
	for p := range stPartitions {
		entries, err := os.ReadDir(taskDir(p))
		if err != nil {
			t.Fatal(err)
		}
		var hit []string
		for _, de := range entries {
			name := de.Name()
			isTable, isManifest, isCurrent := strings.HasSuffix(name, ".sst"), strings.HasPrefix(name, "MANIFEST-"), name == "CURRENT"
			if (p == 0 && (isTable || isManifest || isCurrent)) || (p == 1 && isTable) || (p == 2 && isManifest) || (p == 3 && isCurrent) {
				junk := garbage
				if p == 1 {
					// Garbage of the table's own size, which Pebble only
					// notices when it reads the table.
					info, err := de.Info()
					if err != nil {
						t.Fatal(err)
					}
					junk = bytes.Repeat([]byte{0xa5}, int(info.Size()))
				}
				if err := os.WriteFile(filepath.Join(taskDir(p), name), junk, 0o644); err != nil {
					t.Fatal(err)
				}
				hit = append(hit, name)
			}
		}
		if len(hit) == 0 {
			t.Fatalf("task 0_%d: no Pebble file to corrupt among %v", p, entries)
		}
	}
	e.produceCounted("in", rng, 3_000, 300, want)
	changelog := e.ends("counter-counts-changelog")
	log := stNewLog(t)
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, log.logger("run2")))
	e.checkChangelogAndOutput(t, "counter", "out", want)
	e.checkLocalStores(t, dir, "counter", "in", 0, want)
	wiped := map[string]bool{}
	for _, w := range log.find("wiping the local store directory; the stores will be restored from their changelogs") {
		wiped[w.task()] = true
	}
	_, restored := stRestored(log.find("restored store"))
	for p := range int32(stPartitions) {
		task := fmt.Sprintf("0_%d", p)
		if !wiped[task] {
			t.Errorf("task %s: the corrupt store directory was not wiped", task)
		}
		if restored[task] != changelog[p] {
			t.Errorf("task %s restored %d records, want its whole changelog: %d", task, restored[task], changelog[p])
		}
	}

	// Directories that belong to something else.
	writeIdentity := func(p int, id pebblestore.Identity) {
		b, _ := json.Marshal(id)
		if err := os.WriteFile(filepath.Join(taskDir(p), "SAMSA-IDENTITY"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeIdentity(0, pebblestore.Identity{Job: "another-job", Task: "0_0", Partitions: stPartitions})
	writeIdentity(1, pebblestore.Identity{Job: "counter", Task: "0_1", Partitions: 2 * stPartitions})
	writeIdentity(2, pebblestore.Identity{Job: "counter", Task: "0_3", Partitions: stPartitions})
	if err := os.Remove(filepath.Join(taskDir(3), "SAMSA-IDENTITY")); err != nil {
		t.Fatal(err)
	}
	e.produceCounted("in", rng, 3_000, 300, want)
	log = stNewLog(t)
	stRunToEnd(t, stCountJob("counter", nil), e.config(dir, log.logger("run3")))
	e.checkChangelogAndOutput(t, "counter", "out", want)
	e.checkLocalStores(t, dir, "counter", "in", 0, want)
	if w := log.find("wiping the local store directory; the stores will be restored from their changelogs"); len(w) != stPartitions {
		t.Errorf("%d foreign store directories wiped, want %d", len(w), stPartitions)
	}
}

// 7. Two instances never share a state directory: the second fails fast,
// and the first runs on.
func TestStateDirLocked(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(7, 7))
	want := map[string]int64{}
	e.produceCounted("in", rng, 2_000, 100, want)
	dir := t.TempDir()
	a := stStart(t, stCountJob("locker", nil), e.config(dir, stNewLog(t).logger("A")))
	waitWithin(t, stWait, "A to process its input", func() bool { return e.allCommitted("locker", "in") })

	cfg := e.config(dir, stNewLog(t).logger("B"))
	cfg.UntilEnd = true
	r, err := runner.New(stCountJob("locker", nil), cfg)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	err = r.Run(ctx)
	took := time.Since(began)
	if err == nil {
		t.Fatalf("a second runner on the state directory of a running one returned no error")
	}
	if !strings.Contains(err.Error(), "state directory") || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q: want it to say that state directory %s is in use", err, dir)
	}
	if took > 10*time.Second {
		t.Errorf("the second runner took %s to fail", took)
	}

	e.produceCounted("in", rng, 2_000, 100, want)
	waitWithin(t, stWait, "A to process more input", func() bool { return e.allCommitted("locker", "in") })
	a.stop(t, "A")
	e.checkChangelogAndOutput(t, "locker", "out", want)
}

// 8. Word count with a repartition step (the job of examples/wordcount):
// exact counts, and a restart continues exactly.
func TestStateWordCountRepartition(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "lines", "word-counts")
	rng := rand.New(rand.NewPCG(8, 8))
	vocab := make([]string, 300)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("w%c%c%c", 'a'+i%26, 'a'+i/26%26, 'a'+i/676)
	}
	want := map[string]int64{}
	produce := func(n int) {
		t.Helper()
		var recs []*kgo.Record
		for i := range n {
			var words []string
			for range 1 + rng.IntN(12) {
				w := vocab[rng.IntN(len(vocab))]
				if rng.IntN(4) == 0 {
					w = strings.ToUpper(w)
				}
				words = append(words, w)
			}
			line := strings.Join(words, ", ") + "."
			for _, w := range stSplit(line) {
				want[w]++
			}
			recs = append(recs, &kgo.Record{Topic: "lines", Key: fmt.Appendf(nil, "line-%d", i), Value: []byte(line)})
		}
		ctx, cancel := context.WithTimeout(context.Background(), stWait)
		defer cancel()
		if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	produce(3_000)
	dir := t.TempDir()
	stRunToEnd(t, stWordCountJob(), e.config(dir, stNewLog(t).logger("run1")))
	e.checkChangelogAndOutput(t, "wordcount", "word-counts", want)
	if got, n := stSum(e.ends("wordcount-words-repartition")), stTotal(want); got != n {
		t.Errorf("the repartition topic holds %d records, want one per word: %d", got, n)
	}

	produce(2_000)
	log := stNewLog(t)
	stRunToEnd(t, stWordCountJob(), e.config(dir, log.logger("run2")))
	e.checkChangelogAndOutput(t, "wordcount", "word-counts", want)
	counts, _ := stStoreContents(t, dir, "wordcount", 1)
	stCheckCounts(t, "the local Pebble stores", counts, want)
	if restored, _ := stRestored(log.find("restored store")); restored != 0 {
		t.Errorf("the clean restart restored %d records, want 0", restored)
	}
	t.Logf("%d words of %d distinct", stTotal(want), len(want))
}

// The SIGKILL test runs testdata/statejob, the keyed count, as a child
// process against the kfake broker in the test process, so that killing
// the job leaves the broker and its commits alone.

// stCommitTrap holds the next offset commit of the job until the test has
// killed the job.
type stCommitTrap struct {
	arrived chan struct{} // closed when the commit arrives
	release chan struct{} // closed when the job is dead
}

// 4. The keyed count, killed with SIGKILL at random moments mid-stream and
// restarted (on its state directory, and once on an empty one) while its
// input grows, then run to the end: its state is exact. At-least-once may
// write an output twice, but never a count that no prefix of the input
// gives, and the latest changelog value and the local store of each key
// are its exact count.
func TestStateSIGKILLExact(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a job binary; skipped with -short")
	}
	t.Parallel()
	e := stSetup(t, "in", "out")
	bin := procBuild(t, "./testdata/statejob")
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	const keys = 500
	want := map[string]int64{}
	e.produceCounted("in", rng, 30_000, keys, want)

	// More input arrives while the job is killed and restarted.
	prodRng := rand.New(rand.NewPCG(seed, 5))
	prodCtx, stopProducing := context.WithCancel(context.Background())
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-prodCtx.Done():
				return
			case <-tick.C:
			}
			recs := make([]*kgo.Record, 150)
			for j := range recs {
				k := stKey(prodRng.IntN(keys))
				want[k]++
				recs[j] = &kgo.Record{Topic: "in", Key: []byte(k), Value: fmt.Appendf(nil, "p%d-%d", i, j)}
			}
			ctx, cancel := context.WithTimeout(context.Background(), stWait)
			err := e.cl.ProduceSync(ctx, recs...).FirstErr()
			cancel()
			if err != nil {
				t.Errorf("produce: %v", err)
				return
			}
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopProducing()
			<-prodDone
		}
	}
	defer stop()

	stable := t.TempDir()
	start := func(run int, dir string, extra ...string) *proc {
		args := append([]string{"run",
			"--brokers", e.addr,
			"--state-dir", dir,
			"--commit-interval", "100ms",
			"--session-timeout", "1s",
			"--cache-bytes", "65536",
			"--memtable-bytes", "1048576",
			"--block-cache-bytes", "4194304",
			"--log-json",
			"--log-level", "info",
		}, extra...)
		return procStart(t, fmt.Sprintf("statejob run %d", run), bin, []string{"STATEJOB_RECORD_DELAY=50us"}, args...)
	}

	type runInfo struct {
		dir                            string
		inAtKill, outAtKill, committed int64
		restored, rewritten            int64
		took                           time.Duration
	}
	const kills = 6
	const freshRun = 3                         // this run starts on an empty state directory
	trapRuns := map[int]bool{2: true, 4: true} // these runs are killed in a commit
	var armed atomic.Pointer[stCommitTrap]
	e.c.ControlKey(kmsg.OffsetCommit.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.c.KeepControl()
		trap := armed.Load()
		if trap == nil || req.(*kmsg.OffsetCommitRequest).Group != "statejob" || !armed.CompareAndSwap(trap, nil) {
			return nil, nil, false // commit as usual
		}
		close(trap.arrived)
		e.c.SleepControl(func() { <-trap.release }) // until the committer is dead
		return nil, errors.New("the committer was killed"), true
	})
	var runs []runInfo
	var procs []*proc
	began := time.Now()
	for run := range kills {
		dir := stable
		if run == freshRun {
			dir = t.TempDir()
		}
		runStart := time.Now()
		before := stSum(e.ends("out"))
		committedBefore, _ := e.committed("statejob", "in")
		p := start(run, dir)
		procs = append(procs, p)
		alive := func() {
			if p.exited() {
				t.Fatalf("%s exited (code %d):\n%s", p.name, p.cmd.ProcessState.ExitCode(), p.stderr.String())
			}
		}
		switch {
		case run == 0:
			// Kill the first run before its first commit: once it has
			// written some outputs, mid-way through its first poll.
			target := before + 1 + int64(rng.IntN(3_000))
			waitWithin(t, stWait, fmt.Sprintf("run %d to write %d outputs", run, target-before), func() bool {
				alive()
				return stSum(e.ends("out")) >= target
			})
		default:
			// Kill the others once they have committed a random amount of
			// input, so that each makes progress.
			target := stSum(committedBefore) + 1 + int64(rng.IntN(12_000))
			waitWithin(t, stWait, fmt.Sprintf("run %d to commit %d inputs", run, target), func() bool {
				alive()
				offs, _ := e.committed("statejob", "in")
				return stSum(offs) >= target
			})
		}
		if trapRuns[run] {
			// Kill it in its next commit: after its stores wrote their
			// changes to the changelog, before the broker commits the
			// input offsets. The next run finds changelog records past
			// the committed changelog offset and must rewrite their keys.
			trap := &stCommitTrap{arrived: make(chan struct{}), release: make(chan struct{})}
			armed.Store(trap)
			select {
			case <-trap.arrived:
			case <-time.After(stWait):
				t.Fatalf("run %d did not commit within %s", run, stWait)
			}
			p.kill(t)
			close(trap.release)
		} else {
			// A random moment later: mid-poll, mid-commit, or mid-restore.
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
		if !p.exited() {
			p.kill(t)
		}
		offs, _ := e.committed("statejob", "in")
		runs = append(runs, runInfo{dir: dir, inAtKill: stSum(e.ends("in")), outAtKill: stSum(e.ends("out")), committed: stSum(offs), took: time.Since(runStart)})
	}
	stop()
	inputs := stSum(e.ends("in"))
	if inputs != stTotal(want) {
		t.Fatalf("%d input records, but %d produced", inputs, stTotal(want))
	}

	// The last run waits for the killed members to leave the group, so
	// that it owns every task until the end.
	waitWithin(t, stWait, "the killed members to leave the group", func() bool { return e.groupEmpty("statejob") })
	final := start(kills, stable, "--until-end")
	procs = append(procs, final)
	if code := final.wait(t, 2*stWait); code != 0 {
		t.Fatalf("the --until-end run exited with code %d:\n%s", code, final.stderr.String())
	}
	for i, p := range procs {
		entries := stParseLog(p.stderr.String())
		total, _ := stRestored(entries)
		var rewritten int64
		for _, r := range stFind(entries, "rewriting keys changed after the last commit of a previous owner") {
			rewritten += r.int("keys")
		}
		if i < len(runs) {
			runs[i].restored, runs[i].rewritten = total, rewritten
		} else {
			t.Logf("final run: restored %d changelog records, rewrote %d keys", total, rewritten)
		}
	}

	for run := range trapRuns {
		if runs[run+1].rewritten == 0 {
			t.Errorf("run %d, after a run killed in a commit, rewrote no keys; the killed run left changelog records past the committed offset", run+1)
		}
	}
	if !e.allCommitted("statejob", "in") {
		t.Errorf("after the --until-end run the committed offsets are not the input's end")
	}
	changelog := stLatest(t, "changelog", e.readAll("statejob-counts-changelog"))
	stCheckCounts(t, "the changelog's latest values", changelog, want)
	// The final run's local stores: exact, at the committed changelog
	// offsets, which are the changelog's end.
	e.checkLocalStores(t, stable, "statejob", "in", 0, want)

	// Outputs: each count from 1 to the key's total at least once (none
	// lost), none above it (no input counted twice).
	out := e.readAll("out")
	seen := map[string]map[int64]int{}
	for _, r := range out {
		k := string(r.Key)
		if len(r.Value) != 8 {
			t.Fatalf("out/%d@%d: value %x is not a count", r.Partition, r.Offset, r.Value)
		}
		c := int64(binary.BigEndian.Uint64(r.Value))
		if c < 1 || c > want[k] {
			t.Errorf("out/%d@%d: key %q count %d, but the key has %d records: an input was counted twice", r.Partition, r.Offset, k, c, want[k])
			continue
		}
		if seen[k] == nil {
			seen[k] = map[int64]int{}
		}
		seen[k][c]++
	}
	var missing int64
	for k, n := range want {
		for c := int64(1); c <= n; c++ {
			if seen[k][c] == 0 {
				missing++
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d counts never output: inputs lost", missing)
	}
	stCheckCounts(t, "the last output of each key", stLatest(t, "out", out), want)

	dups := int64(len(out)) - inputs
	for i, r := range runs {
		fresh := ""
		if r.dir != stable {
			fresh = " (empty state dir)"
		}
		if trapRuns[i] {
			fresh += " (killed in a commit)"
		}
		t.Logf("run %d%s: restored %d changelog records, rewrote %d keys; killed after %s with %d inputs, %d committed, %d outputs",
			i, fresh, r.restored, r.rewritten, r.took.Round(time.Millisecond), r.inAtKill, r.committed, r.outAtKill)
	}
	t.Logf("%d records in, %d kills, %d output records, %d duplicate outputs (%.1f%%), state exact: %v, in %s",
		inputs, kills, len(out), dups, 100*float64(dups)/float64(inputs), !t.Failed(), time.Since(began).Round(time.Millisecond))
}
