package runner_test

// Tests of the replay command against a Kafka-protocol broker (kfake):
// after a replay with state reset, a job's output and state are those of
// a first run over the log from the replay point, on whichever machine
// its local stores were left; a running job is never touched; a dry run
// changes nothing.

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// rpReplay runs the job binary's replay command against e and returns its
// exit code and outputs.
func (e *stEnv) rpReplay(t *testing.T, job *stream.Job, args ...string) (int, string, string) {
	t.Helper()
	return command(t, job, append([]string{"replay", "--brokers", e.addr}, args...)...)
}

// rpOutputs returns the records of topic past the given end offsets, as
// "key=value" per partition, values decoded as 8-byte counts.
func (e *stEnv) rpOutputs(t *testing.T, topic string, after map[int32]int64) map[int32][]string {
	t.Helper()
	out := map[int32][]string{}
	for _, r := range e.readAll(topic) {
		if r.Offset >= after[r.Partition] {
			c := stLatest(t, topic, []*kgo.Record{r})
			out[r.Partition] = append(out[r.Partition], fmt.Sprintf("%s=%d", r.Key, c[string(r.Key)]))
		}
	}
	return out
}

// rpCheckSame fails the test unless the outputs are the same record for
// record, partition by partition.
func rpCheckSame(t *testing.T, what string, got, want map[int32][]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(want)) {
		g, w := got[p], want[p]
		if slices.Equal(g, w) {
			continue
		}
		i := 0
		for i < min(len(g), len(w)) && g[i] == w[i] {
			i++
		}
		t.Errorf("%s: partition %d: %d records, want %d; they differ from record %d: got %q, want %q",
			what, p, len(g), len(w), i, g[i:min(i+3, len(g))], w[i:min(i+3, len(w))])
	}
	for p := range got {
		if _, ok := want[p]; !ok && len(got[p]) > 0 {
			t.Errorf("%s: partition %d: %d records, want none", what, p, len(got[p]))
		}
	}
}

// rpProduce writes n records with keys drawn from keys, timestamped from
// at a millisecond apart, partitioned by key, and returns them.
func (e *stEnv) rpProduce(t *testing.T, rng *rand.Rand, n, keys int, at time.Time) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "in", Key: []byte(stKey(rng.IntN(keys))), Value: fmt.Appendf(nil, "v%d", i),
			Timestamp: at.Add(time.Duration(i) * time.Millisecond)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	return recs
}

// After a replay from earliest with state reset, a second run of the
// keyed count, on the state directory the first run left (whose stores
// reflect exactly the changelogs' ends), writes exactly the first run's
// output again and ends with the first run's state.
func TestReplayEarliestResetsState(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(1, 6))
	want := map[string]int64{}
	e.produceCounted("in", rng, 3_000, 40, want)
	dir := t.TempDir()
	stRunToEnd(t, stCountJob("rp-earliest", nil), e.config(dir, stNewLog(t).logger("first")))
	first := e.rpOutputs(t, "out", nil)
	firstEnds := e.ends("out")
	e.checkLocalStores(t, dir, "rp-earliest", "in", 0, want)

	code, out, errOut := e.rpReplay(t, stCountJob("rp-earliest", nil), "--from", "earliest")
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	for _, s := range []string{"Replay of job rp-earliest from earliest, resetting state.", "changelog of store counts",
		"Local stores of tasks 0_0, 0_1, 0_2, 0_3 are wiped", "processes 3000 input records"} {
		if !strings.Contains(out, s) {
			t.Errorf("replay output lacks %q:\n%s", s, out)
		}
	}
	offs, _ := e.committed("rp-earliest", "in")
	for p, o := range offs {
		if o != 0 {
			t.Errorf("after the replay, partition %d is committed at %d, want 0", p, o)
		}
	}

	log := stNewLog(t)
	stRunToEnd(t, stCountJob("rp-earliest", nil), e.config(dir, log.logger("second")))
	rpCheckSame(t, "output of the run after the replay", e.rpOutputs(t, "out", firstEnds), first)
	counts, _ := stStoreContents(t, dir, "rp-earliest", 0)
	stCheckCounts(t, "the local stores after the replay", counts, want)
	stCheckCounts(t, "the changelog's latest values", stLatest(t, "changelog", e.readAll("rp-earliest-counts-changelog")), want)
	if n := len(log.find("wiping local store: it does not match the committed changelog")); n != stPartitions {
		t.Errorf("%d local stores wiped, want all %d", n, stPartitions)
	}
}

// The same under exactly-once: the reset needs nothing of the commit
// protocol, and the outputs read_committed are the first run's again.
func TestReplayEarliestExactlyOnce(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	want := map[string]int64{}
	e.produceCounted("in", rand.New(rand.NewPCG(1, 7)), 2_000, 30, want)
	dir := t.TempDir()
	cfg := e.config(dir, stNewLog(t).logger("first"))
	cfg.Processing = runner.ExactlyOnce
	stRunToEnd(t, stCountJob("rp-eos", nil), cfg)
	first := e.rpOutputs(t, "out", nil)
	firstEnds := e.ends("out")

	if code, _, errOut := e.rpReplay(t, stCountJob("rp-eos", nil), "--from", "earliest"); code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	cfg.Logger = stNewLog(t).logger("second")
	stRunToEnd(t, stCountJob("rp-eos", nil), cfg)
	rpCheckSame(t, "output of the run after the replay", e.rpOutputs(t, "out", firstEnds), first)
	counts, _ := stStoreContents(t, dir, "rp-eos", 0)
	stCheckCounts(t, "the local stores after the replay", counts, want)
}

// A replay of the word count, whose count is fed through a repartition
// topic, resets both sub-topologies: the repartition topic and the
// changelog are emptied, and the counts come out as the first run's.
func TestReplayEarliestThroughRepartition(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "lines", "word-counts")
	want := map[string]int64{}
	var recs []*kgo.Record
	rng := rand.New(rand.NewPCG(2, 6))
	for i := range 500 {
		var words []string
		for range 1 + rng.IntN(6) {
			n := rng.IntN(50)
			words = append(words, fmt.Sprintf("w%c%c", 'a'+n%26, 'a'+n/26))
		}
		for _, w := range words {
			want[w]++
		}
		recs = append(recs, &kgo.Record{Topic: "lines", Key: fmt.Appendf(nil, "l%d", i), Value: []byte(strings.Join(words, " "))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stRunToEnd(t, stWordCountJob(), e.config(dir, stNewLog(t).logger("first")))
	firstEnds := e.ends("word-counts")
	repartitionEnds := e.ends("wordcount-words-repartition")

	code, out, errOut := e.rpReplay(t, stWordCountJob(), "--from", "earliest")
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "wordcount-words-repartition") || !strings.Contains(out, "repartition topic: its reader starts over") {
		t.Errorf("the plan does not empty the repartition topic:\n%s", out)
	}
	starts, err := listedStarts(e, "wordcount-words-repartition")
	if err != nil {
		t.Fatal(err)
	}
	// Emptied up to the abort marker of the sealing record, and read
	// from past it.
	readFrom, _ := e.committed("wordcount", "wordcount-words-repartition")
	for p, end := range repartitionEnds {
		if starts[p] != end+1 || readFrom[p] != end+2 {
			t.Errorf("repartition partition %d: starts at %d and is committed at %d after the replay, want %d and %d (its old end %d, a sealing record and its abort marker)",
				p, starts[p], readFrom[p], end+1, end+2, end)
		}
	}

	stRunToEnd(t, stWordCountJob(), e.config(dir, stNewLog(t).logger("second")))
	// Words from several tasks meet in one repartition partition in no
	// fixed order, so compare each word's sequence of counts.
	bySeq := func(outs map[int32][]string) map[string][]string {
		m := map[string][]string{}
		for _, recs := range outs {
			for _, r := range recs {
				k, v, _ := strings.Cut(r, "=")
				m[k] = append(m[k], v)
			}
		}
		return m
	}
	got, wantSeq := bySeq(e.rpOutputs(t, "word-counts", firstEnds)), bySeq(e.rpOutputs(t, "word-counts", nil))
	for w, seq := range got {
		if first := wantSeq[w]; !slices.Equal(seq, first[:min(len(first), len(seq))]) || len(seq) != int(want[w]) {
			t.Errorf("word %q: counts after the replay %v, want 1 to %d", w, seq, want[w])
		}
	}
	counts, _ := stStoreContents(t, dir, "wordcount", 1)
	stCheckCounts(t, "the local stores after the replay", counts, want)
}

func listedStarts(e *stEnv, topic string) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	l, err := e.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = l.Error()
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, err
}

// After a replay from a time, the output is that of the job run over the
// log from that time on (here: on a second broker holding only that part
// of the log), and so is the state.
func TestReplayFromTimestamp(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(3, 6))
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	e.rpProduce(t, rng, 1_500, 30, t0)
	t1 := t0.Add(time.Hour)
	suffix := e.rpProduce(t, rng, 1_500, 30, t1)
	dir := t.TempDir()
	stRunToEnd(t, stCountJob("rp-time", nil), e.config(dir, stNewLog(t).logger("first")))
	firstEnds := e.ends("out")

	code, out, errOut := e.rpReplay(t, stCountJob("rp-time", nil), "--from", t1.Format(time.RFC3339))
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "from 2024-05-01T13:00:00Z") || !strings.Contains(out, "processes 1500 input records") {
		t.Errorf("replay output:\n%s", out)
	}
	stRunToEnd(t, stCountJob("rp-time", nil), e.config(dir, stNewLog(t).logger("second")))
	got := e.rpOutputs(t, "out", firstEnds)

	// The reference: the same job over the suffix alone.
	ref := stSetup(t, "in", "out")
	var again []*kgo.Record
	want := map[string]int64{}
	for _, r := range suffix {
		again = append(again, &kgo.Record{Topic: "in", Key: r.Key, Value: r.Value, Timestamp: r.Timestamp})
		want[string(r.Key)]++
	}
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	if err := ref.cl.ProduceSync(ctx, again...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	refDir := t.TempDir()
	stRunToEnd(t, stCountJob("rp-time", nil), ref.config(refDir, stNewLog(t).logger("reference")))
	rpCheckSame(t, "output after the replay against a run over the suffix", got, ref.rpOutputs(t, "out", nil))
	counts, _ := stStoreContents(t, dir, "rp-time", 0)
	stCheckCounts(t, "the local stores after the replay", counts, want)
}

// Replay refuses while an instance runs, naming it, and changes nothing.
func TestReplayRefusedWhileRunning(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	e.produceCounted("in", rand.New(rand.NewPCG(4, 6)), 200, 10, map[string]int64{})
	rn := stStart(t, stCountJob("rp-live", nil), e.config(t.TempDir(), stNewLog(t).logger("live")))
	waitFor(t, "the job to commit everything", func() bool { return e.allCommitted("rp-live", "in") })
	before, _ := e.committed("rp-live", "in")

	code, _, errOut := e.rpReplay(t, stCountJob("rp-live", nil), "--from", "earliest")
	if code != 1 {
		t.Errorf("replay while running: exit %d, want 1", code)
	}
	for _, s := range []string{"job rp-live is running", "client samsa-rp-live on", "stop every instance first"} {
		if !strings.Contains(errOut, s) {
			t.Errorf("the refusal %q does not say %q", errOut, s)
		}
	}
	after, _ := e.committed("rp-live", "in")
	if !maps.Equal(before, after) {
		t.Errorf("the refused replay moved offsets: %v -> %v", before, after)
	}
	rn.stop(t, "live")
}

// A dry run prints the plan and changes nothing; a time past the end
// means the end.
func TestReplayDryRun(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	e.rpProduce(t, rand.New(rand.NewPCG(5, 6)), 400, 10, time.Now().Add(-time.Hour))
	stRunToEnd(t, stCountJob("rp-dry", nil), e.config(t.TempDir(), stNewLog(t).logger("first")))
	offsets, metas := e.committed("rp-dry", "in")
	changelog := "rp-dry-counts-changelog"
	ends := e.ends(changelog)

	code, out, errOut := e.rpReplay(t, stCountJob("rp-dry", nil), "--from", "earliest", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, errOut)
	}
	inEnds := e.ends("in")
	for p := range int32(stPartitions) {
		// TOPIC PARTITION TASK COMMITTED NEW TO-PROCESS
		row := fmt.Sprintf("in %d 0_%d %d 0 %d", p, p, offsets[p], inEnds[p])
		if !hasRow(out, row) {
			t.Errorf("the plan lacks the row %q:\n%s", row, out)
		}
	}
	if !strings.HasSuffix(out, "Dry run: nothing changed.\n") || !strings.Contains(out, changelog) {
		t.Errorf("dry-run output:\n%s", out)
	}
	offsets2, metas2 := e.committed("rp-dry", "in")
	starts, _ := listedStarts(e, changelog)
	if !maps.Equal(offsets, offsets2) || !maps.Equal(metas, metas2) || !maps.Equal(ends, e.ends(changelog)) || stSum(starts) != 0 {
		t.Errorf("the dry run changed something: offsets %v -> %v, metadata %v -> %v, changelog ends %v -> %v, starts %v",
			offsets, offsets2, metas, metas2, ends, e.ends(changelog), starts)
	}

	code, out, errOut = e.rpReplay(t, stCountJob("rp-dry", nil), "--from", "2100-01-01T00:00:00Z", "--dry-run")
	if code != 0 || !strings.Contains(out, "no record at or after the time: the end") || !strings.Contains(out, "processes 0 input records") && !strings.Contains(out, "TO PROCESS") {
		t.Errorf("replay from the future: exit %d, %s\n%s", code, errOut, out)
	}
}

// --keep-state replays over the existing state: the counts double.
func TestReplayKeepState(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	want := map[string]int64{}
	e.produceCounted("in", rand.New(rand.NewPCG(6, 6)), 500, 20, want)
	dir := t.TempDir()
	stRunToEnd(t, stCountJob("rp-keep", nil), e.config(dir, stNewLog(t).logger("first")))
	if code, out, errOut := e.rpReplay(t, stCountJob("rp-keep", nil), "--from", "earliest", "--keep-state"); code != 0 || !strings.Contains(out, "State: kept") {
		t.Fatalf("replay --keep-state: exit %d: %s\n%s", code, errOut, out)
	}
	stRunToEnd(t, stCountJob("rp-keep", nil), e.config(dir, stNewLog(t).logger("second")))
	doubled := map[string]int64{}
	for k, v := range want {
		doubled[k] = 2 * v
	}
	counts, _ := stStoreContents(t, dir, "rp-keep", 0)
	stCheckCounts(t, "counts after replaying over the state", counts, doubled)
}

// Replaying some partitions: fine for a stateless job or with
// --keep-state; refused, with what to add, where resetting only those
// would leave state inconsistent.
func TestReplaySelection(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out", "lines", "word-counts")
	e.produceCounted("in", rand.New(rand.NewPCG(7, 6)), 200, 10, map[string]int64{})
	stRunToEnd(t, upperJob("rp-sel", nil), e.config(t.TempDir(), stNewLog(t).logger("upper")))
	before, _ := e.committed("rp-sel", "in")
	if code, _, errOut := e.rpReplay(t, upperJob("rp-sel", nil), "--from", "earliest", "--topic", "in:2"); code != 0 {
		t.Fatalf("replay --topic in:2: exit %d: %s", code, errOut)
	}
	after, _ := e.committed("rp-sel", "in")
	for p := range int32(stPartitions) {
		if want := map[bool]int64{true: 0, false: before[p]}[p == 2]; after[p] != want {
			t.Errorf("partition %d committed at %d after replaying in:2, want %d", p, after[p], want)
		}
	}

	code, _, errOut := e.rpReplay(t, stWordCountJob(), "--from", "earliest", "--topic", "lines:0")
	if code != 1 || !strings.Contains(errOut, "sub-topology 1 (stores counts) combines every partition of sub-topology 0") || !strings.Contains(errOut, "--keep-state") {
		t.Errorf("replay of lines:0 with state reset: exit %d, %q", code, errOut)
	}
	if code, _, errOut := e.rpReplay(t, stWordCountJob(), "--from", "earliest", "--topic", "lines:0", "--keep-state"); code != 0 {
		t.Errorf("replay of lines:0 keeping state: exit %d, %q", code, errOut)
	}
	// A global table's topic is not the group's: not replayed.
	global := func() *stream.Job {
		job := upperJob("rp-global", nil)
		stream.GlobalTableInput(job, "lines", serde.String, serde.String)
		return job
	}
	if code, out, errOut := e.rpReplay(t, global(), "--from", "earliest", "--dry-run"); code != 0 || strings.Contains(out, "lines") {
		t.Errorf("replay of a job with a global table: exit %d, %s\n%s", code, errOut, out)
	}
	if code, _, errOut := e.rpReplay(t, global(), "--from", "earliest", "--topic", "lines"); code != 2 || !strings.Contains(errOut, `"lines" is the topic of a global table`) {
		t.Errorf("replay --topic of a global table's topic: exit %d, %q", code, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "flag --from: missing"},
		{[]string{"--from", "yesterday"}, "is not earliest, latest, an offset or an RFC 3339 time"},
		{[]string{"--from", "-3"}, "must not be negative"},
		{[]string{"--from", "0", "--topic", "nosuch"}, `"nosuch" is not an input topic of job wordcount (its inputs: lines)`},
		{[]string{"--from", "0", "--topic", "lines:9"}, "topic lines has partitions 0 to 3"},
		{[]string{"--from", "0", "--topic", "lines:x"}, `"lines:x": want TOPIC or TOPIC:PARTITION`},
	} {
		code, _, errOut := e.rpReplay(t, stWordCountJob(), tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("replay %q: exit %d, %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

// hasRow reports whether out has a line whose fields are those of row.
func hasRow(out, row string) bool {
	want := strings.Fields(row)
	for _, line := range strings.Split(out, "\n") {
		if slices.Equal(strings.Fields(line), want) {
			return true
		}
	}
	return false
}
