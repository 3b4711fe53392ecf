package examples_test

// The determinism test: every example job, run over the same input log
// three times on fresh brokers and fresh state, writes the same records,
// task by task, and ends with the same state.
//
//   - Run 1 is the example's own demo (run --demo): it seeds the input and
//     runs the job to its end.
//   - Run 2 copies run 1's input, record for record (partition, key,
//     value, headers, timestamp), to a fresh broker and runs the job to
//     the end with a much shorter commit interval.
//   - Run 3 does the same in two parts with a restart between: the first
//     part of every input partition, a run to its end, then the rest and a
//     run on a fresh state directory, which restores the stores from their
//     changelogs.
//
// Every run stamps its outputs with the task that wrote them (the runner's
// --task-header). Then, for each topic the job writes:
//
//   - a task whose sub-topology reads only the job's input topics
//     processes a function of the log, so its records, in each partition,
//     must be the same (key, value, timestamp, headers) in the same order;
//     a partition written by one such task is then the same record for
//     record;
//   - a task that reads a repartition topic merges what several upstream
//     tasks wrote to it, in the order their writes reached the broker,
//     which is not a function of the log: its records per key must come
//     in the same number and end with the same value (the final result),
//     not in the same order;
//
// and every changelog must hold the same latest value for every key: the
// same final state.
//
// A run's input is cut for the restart so that the cut is a point the
// job passes in every run: half of each partition for tasks that read one
// input partition; for tasks that merge several partitions by timestamp
// (a join's inputs), everything before a timestamp; the topics of global
// tables go whole into the first part (a global table is read to its end
// at start, not merged by time).

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// examples are the example jobs the test runs, by directory. Adding an
// example is one line: its demo's sample input is what the runs compare.
var examples = []string{
	"pageviews",
	"router",
	"wordcount",
	"windowed",
	"enrich",
}

// taskHeader is stream.TaskHeader (kept literal: the test reads the
// binaries' output as any consumer would).
const taskHeader = "samsa-task"

func TestDeterminism(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs every example; skipped with -short")
	}
	bins := buildExamples(t, examples)
	for _, name := range examples {
		t.Run(name, func(t *testing.T) {
			bin := bins[name]
			job := describe(t, bin)

			// Run 1: the demo, which seeds the input.
			b1 := newCluster(t)
			out := runBin(t, bin, "run", "--demo", "--brokers", b1, "--task-header", "--state-dir", t.TempDir())
			job.inputs = demoInputs(t, out)
			job.classify()
			input := map[string][][]*kgo.Record{}
			for _, topic := range job.inputs {
				input[topic] = readTopic(t, b1, topic)
			}
			first := snapshot(t, b1, job)

			// Run 2: the same input, a short commit interval.
			b2 := newCluster(t)
			runBin(t, bin, "create-topics", "--brokers", b2, "--partitions", strconv.Itoa(partitionsOf(input)))
			produce(t, b2, input, nil)
			runBin(t, bin, "run", "--until-end", "--brokers", b2, "--task-header", "--state-dir", t.TempDir(), "--commit-interval", "20ms")
			compare(t, "run 2", job, first, snapshot(t, b2, job))

			// Run 3: a restart half-way, on a fresh state directory.
			b3 := newCluster(t)
			runBin(t, bin, "create-topics", "--brokers", b3, "--partitions", strconv.Itoa(partitionsOf(input)))
			cut := job.cut(input)
			produce(t, b3, input, func(topic string, p, i int) bool { return i < cut[topic][p] })
			runBin(t, bin, "run", "--until-end", "--brokers", b3, "--task-header", "--state-dir", t.TempDir())
			produce(t, b3, input, func(topic string, p, i int) bool { return i >= cut[topic][p] })
			runBin(t, bin, "run", "--until-end", "--brokers", b3, "--task-header", "--state-dir", t.TempDir())
			compare(t, "run 3 (restarted)", job, first, snapshot(t, b3, job))
		})
	}
}

// jobTopics is what the test knows of an example job, from its describe
// command and its demo.
type jobTopics struct {
	inputs       []string         // as the demo seeded them
	outputs      []string         // written, not repartition topics
	repartitions []string         // internal topics written and read
	changelogs   []string         // the stores' changelogs
	merging      map[int]bool     // sub-topologies that read a repartition topic
	reads        map[int][]string // sub-topology -> topics it reads
	globals      []string         // inputs no sub-topology reads: global tables
	multi        map[string]bool  // inputs merged with another input by one task
}

var (
	subRe   = regexp.MustCompile(`^sub-topology (\d+)$`)
	readRe  = regexp.MustCompile(`^  reads\s+(\S+)( \(repartition\))?$`)
	writeRe = regexp.MustCompile(`^  writes\s+(\S+)( \(repartition\))?$`)
	storeRe = regexp.MustCompile(`^  store\s+\S+ \(.*changelog (\S+)\)$`)
)

// describe parses the text of the binary's describe command.
func describe(t *testing.T, bin string) *jobTopics {
	text := runBin(t, bin, "describe", "--offline")
	j := &jobTopics{merging: map[int]bool{}, reads: map[int][]string{}, multi: map[string]bool{}}
	sub := -1
	for _, line := range strings.Split(text, "\n") {
		if m := subRe.FindStringSubmatch(line); m != nil {
			sub, _ = strconv.Atoi(m[1])
			continue
		}
		if m := readRe.FindStringSubmatch(line); m != nil {
			j.reads[sub] = append(j.reads[sub], m[1])
			if m[2] != "" {
				j.merging[sub] = true
			}
		}
		if m := writeRe.FindStringSubmatch(line); m != nil {
			if m[2] != "" {
				j.repartitions = append(j.repartitions, m[1])
			} else if !slices.Contains(j.outputs, m[1]) {
				j.outputs = append(j.outputs, m[1])
			}
		}
		if m := storeRe.FindStringSubmatch(line); m != nil {
			j.changelogs = append(j.changelogs, m[1])
		}
	}
	if len(j.reads) == 0 || len(j.outputs) == 0 {
		t.Fatalf("cannot make out the job's topics from its description:\n%s", text)
	}
	return j
}

// classify finds the global tables' topics and the inputs merged by time.
func (j *jobTopics) classify() {
	read := map[string]bool{}
	for _, topics := range j.reads {
		var external []string
		for _, topic := range topics {
			read[topic] = true
			if slices.Contains(j.inputs, topic) {
				external = append(external, topic)
			}
		}
		if len(external) > 1 {
			for _, topic := range external {
				j.multi[topic] = true
			}
		}
	}
	for _, topic := range j.inputs {
		if !read[topic] {
			j.globals = append(j.globals, topic)
		}
	}
}

// cut returns, per input topic and partition, how many of the input's
// records go into the first part of run 3 (see the file comment).
func (j *jobTopics) cut(input map[string][][]*kgo.Record) map[string][]int {
	var times []int64
	for topic := range j.multi {
		for _, part := range input[topic] {
			for _, r := range part {
				times = append(times, r.Timestamp.UnixMilli())
			}
		}
	}
	slices.Sort(times)
	times = slices.Compact(times)
	var at int64
	if len(times) > 0 {
		at = times[len(times)/2]
	}
	cut := map[string][]int{}
	for topic, parts := range input {
		cut[topic] = make([]int, len(parts))
		for p, part := range parts {
			switch {
			case slices.Contains(j.globals, topic):
				cut[topic][p] = len(part)
			case j.multi[topic]:
				cut[topic][p] = slices.IndexFunc(part, func(r *kgo.Record) bool { return r.Timestamp.UnixMilli() >= at })
				if cut[topic][p] < 0 {
					cut[topic][p] = len(part)
				}
			default:
				cut[topic][p] = len(part) / 2
			}
		}
	}
	return cut
}

// demoInputs reads the demo's "wrote N sample records to a, b" line.
func demoInputs(t *testing.T, out string) []string {
	m := regexp.MustCompile(`(?m)^demo: wrote \d+ sample records? to (.+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the demo did not say what it seeded:\n%s", out)
	}
	return strings.Split(m[1], ", ")
}

func partitionsOf(input map[string][][]*kgo.Record) int {
	n := 0
	for _, parts := range input {
		n = max(n, len(parts))
	}
	return n
}

// buildExamples builds the examples, with one go command, into a
// temporary directory, and returns their binaries by name. If the test
// runs with the race detector, so do they (which also lets the build
// reuse the packages compiled for the test).
func buildExamples(t *testing.T, names []string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled() {
		args = append(args, "-race")
	}
	bins := map[string]string{}
	for _, name := range names {
		args = append(args, "./"+name)
		bins[name] = filepath.Join(dir, name)
	}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bins
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// runBin runs the binary to its exit and returns its standard output,
// failing the test if it fails.
func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "SAMSA_LOG_LEVEL=warn")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// newCluster starts a kfake broker for the test and returns its address.
func newCluster(t *testing.T) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

func client(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// readTopic reads every record of topic, read_committed, by partition in
// offset order (transaction markers left out).
func readTopic(t *testing.T, addr, topic string) [][]*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(client(t, addr)).ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	parts := make([][]*kgo.Record, len(ends[topic]))
	want := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			offsets[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return parts
	}
	cl := client(t, addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("read %s: %v", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= want[r.Partition] {
				return
			}
			if !r.Attrs.IsControl() {
				parts[r.Partition] = append(parts[r.Partition], r)
			}
			if r.Offset+1 == want[r.Partition] {
				delete(want, r.Partition)
			}
		})
	}
	return parts
}

// produce writes the records of input that keep selects (by topic,
// partition and index), each to its partition with its key, value,
// headers and timestamp, in order.
func produce(t *testing.T, addr string, input map[string][][]*kgo.Record, keep func(topic string, p, i int) bool) {
	t.Helper()
	cl := client(t, addr, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for _, topic := range sortedKeys(input) {
		for p, part := range input[topic] {
			for i, r := range part {
				if keep == nil || keep(topic, p, i) {
					recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(p), Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp})
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce the input: %v", err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// runResult is what a run wrote: the job's output and repartition topics,
// and its changelogs.
type runResult struct {
	written    map[string][][]*kgo.Record
	changelogs map[string][][]*kgo.Record
}

func snapshot(t *testing.T, addr string, j *jobTopics) runResult {
	res := runResult{written: map[string][][]*kgo.Record{}, changelogs: map[string][][]*kgo.Record{}}
	for _, topic := range append(slices.Clone(j.outputs), j.repartitions...) {
		res.written[topic] = readTopic(t, addr, topic)
	}
	for _, topic := range j.changelogs {
		res.changelogs[topic] = readTopic(t, addr, topic)
	}
	return res
}

// compare checks run against the first run (see the file comment).
func compare(t *testing.T, run string, j *jobTopics, first, got runResult) {
	t.Helper()
	var records, identical, exact, merged int
	for _, topic := range sortedKeys(first.written) {
		want, have := first.written[topic], got.written[topic]
		if len(want) != len(have) {
			t.Errorf("%s: %s has %d partitions, run 1's had %d", run, topic, len(have), len(want))
			continue
		}
		for p := range want {
			byTask1, byTask2 := byTask(t, topic, p, want[p]), byTask(t, topic, p, have[p])
			tasks := sortedKeys(byTask1)
			if got := sortedKeys(byTask2); !slices.Equal(tasks, got) {
				t.Errorf("%s: %s[%d] written by tasks %v, run 1's by %v", run, topic, p, got, tasks)
				continue
			}
			for _, task := range tasks {
				a, b := byTask1[task], byTask2[task]
				records += len(a)
				if j.merging[subOf(t, task)] {
					if err := sameFinal(a, b); err != "" {
						t.Errorf("%s: %s[%d], task %s (merges a repartition topic): %s", run, topic, p, task, err)
					}
					merged += len(a)
					continue
				}
				if err := sameRecords(a, b); err != "" {
					t.Errorf("%s: %s[%d], task %s: %s", run, topic, p, task, err)
					continue
				}
				identical += len(a)
			}
			if len(tasks) == 1 && !j.merging[subOf(t, tasks[0])] && sameRecords(want[p], have[p]) == "" {
				exact++
			}
		}
	}
	var keys int
	for _, topic := range sortedKeys(first.changelogs) {
		want, have := latest(first.changelogs[topic]), latest(got.changelogs[topic])
		keys += len(want)
		for _, k := range sortedKeys(want) {
			if v, ok := have[k]; !ok || !bytes.Equal(v, want[k]) {
				t.Errorf("%s: final state: %s key %s is %q, run 1 ended with %q", run, topic, k, v, want[k])
			}
		}
		for k := range have {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: final state: %s holds key %s, run 1 ended without it", run, topic, k)
			}
		}
	}
	if records == 0 {
		t.Errorf("%s: the job wrote nothing to compare", run)
	}
	t.Logf("%s: %d records compared: %d the same in the same order by task (%d partitions written by one task, the same record for record), %d with the same final result per key; %d keys of final state the same",
		run, records, identical, exact, merged, keys)
}

// byTask splits a partition's records by the task that wrote them.
func byTask(t *testing.T, topic string, p int, recs []*kgo.Record) map[string][]*kgo.Record {
	out := map[string][]*kgo.Record{}
	for _, r := range recs {
		task := ""
		for _, h := range r.Headers {
			if h.Key == taskHeader {
				task = string(h.Value)
			}
		}
		if task == "" {
			t.Fatalf("%s[%d]@%d has no %s header", topic, p, r.Offset, taskHeader)
		}
		out[task] = append(out[task], r)
	}
	return out
}

func subOf(t *testing.T, task string) int {
	sub, _, ok := strings.Cut(task, "_")
	n, err := strconv.Atoi(sub)
	if !ok || err != nil {
		t.Fatalf("task header %q is not <sub-topology>_<partition>", task)
	}
	return n
}

// sameRecords reports the first difference between two sequences of
// records: key, value, timestamp and headers, in order.
func sameRecords(a, b []*kgo.Record) string {
	for i := range min(len(a), len(b)) {
		x, y := a[i], b[i]
		if !bytes.Equal(x.Key, y.Key) || !bytes.Equal(x.Value, y.Value) || !x.Timestamp.Equal(y.Timestamp) || !sameHeaders(x.Headers, y.Headers) {
			return fmt.Sprintf("record %d differs: %s, run 1 had %s", i, show(y), show(x))
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d records, run 1 had %d", len(b), len(a))
	}
	return ""
}

func sameHeaders(a, b []kgo.RecordHeader) bool {
	return slices.EqualFunc(a, b, func(x, y kgo.RecordHeader) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
}

func show(r *kgo.Record) string {
	return fmt.Sprintf("key %q value %q at %d", r.Key, r.Value, r.Timestamp.UnixMilli())
}

// sameFinal reports a difference in the number of records per key or in
// each key's last value.
func sameFinal(a, b []*kgo.Record) string {
	count := func(recs []*kgo.Record) (map[string]int, map[string][]byte) {
		n, last := map[string]int{}, map[string][]byte{}
		for _, r := range recs {
			n[string(r.Key)]++
			last[string(r.Key)] = r.Value
		}
		return n, last
	}
	n1, last1 := count(a)
	n2, last2 := count(b)
	for _, k := range sortedKeys(n1) {
		if n1[k] != n2[k] || !bytes.Equal(last1[k], last2[k]) {
			return fmt.Sprintf("key %q: %d records ending with %q, run 1 had %d ending with %q", k, n2[k], last2[k], n1[k], last1[k])
		}
	}
	if len(n1) != len(n2) {
		return fmt.Sprintf("%d keys, run 1 had %d", len(n2), len(n1))
	}
	return ""
}

// latest returns the latest value of every key of a changelog's
// partitions, leaving out deleted keys.
func latest(parts [][]*kgo.Record) map[string][]byte {
	out := map[string][]byte{}
	for p, part := range parts {
		for _, r := range part {
			k := fmt.Sprintf("%d/%x", p, r.Key)
			if r.Value == nil {
				delete(out, k)
			} else {
				out[k] = r.Value
			}
		}
	}
	return out
}
