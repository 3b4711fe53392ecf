package runner_test

// Exactly-once tests: a word count with a repartition step (the job of
// testdata/wordjob) killed with SIGKILL again and again — mid-stream,
// mid-restore, mid-rebalance — and a zombie instance paused past its
// session timeout. Under exactly-once the read_committed output and the
// final state are exact; under at-least-once nothing is lost.

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	eosJob     = "wordjob"
	eosSub     = 1 // the sub-topology that counts
	eosVocab   = 1500
	eosAllTask = 2 * stPartitions // tasks of both sub-topologies
)

// eosEnv runs copies of the word-count job binary against one broker.
type eosEnv struct {
	*stEnv
	t          *testing.T
	bin        string
	processing string
	want       map[string]int64 // the exact count of each word
	lines      int
}

func newEOSEnv(t *testing.T, processing string) *eosEnv {
	if testing.Short() {
		t.Skip("builds and runs a job binary; skipped with -short")
	}
	return &eosEnv{
		stEnv:      stSetup(t, "lines", "word-counts"),
		t:          t,
		bin:        procBuild(t, "./testdata/wordjob"),
		processing: processing,
		want:       map[string]int64{},
	}
}

// produceLines writes n lines of one to four words drawn from the
// vocabulary, keyed by line number (spread over the partitions).
func (e *eosEnv) produceLines(rng *rand.Rand, n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	const batch = 5000
	for lo := 0; lo < n; lo += batch {
		var recs []*kgo.Record
		for i := lo; i < min(lo+batch, n); i++ {
			words := make([]string, 1+rng.IntN(4))
			for j := range words {
				words[j] = fmt.Sprintf("w%04d", rng.IntN(eosVocab))
				e.want[words[j]]++
			}
			recs = append(recs, &kgo.Record{Topic: "lines", Key: fmt.Appendf(nil, "l%d", e.lines+i), Value: []byte(strings.Join(words, " "))})
		}
		if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			e.t.Fatalf("produce lines: %v", err)
		}
	}
	e.lines += n
}

// start starts an instance on stateDir with transactional ID txnID;
// lineDelay throttles it (zero: full speed).
func (e *eosEnv) start(name, stateDir, txnID string, lineDelay time.Duration, extra ...string) *proc {
	e.t.Helper()
	args := append([]string{"run",
		"--brokers", e.addr,
		"--state-dir", stateDir,
		"--processing", e.processing,
		"--transactional-id", txnID,
		"--session-timeout", "1s",
		"--cache-bytes", "65536",
		"--memtable-bytes", "1048576",
		"--block-cache-bytes", "4194304",
		"--log-json",
		"--log-level", "info",
	}, extra...)
	if e.processing == "at-least-once" {
		args = append(args, "--commit-interval", "100ms") // exactly-once's default
	}
	var env []string
	if lineDelay > 0 {
		env = append(env, "WORDJOB_LINE_DELAY="+lineDelay.String())
	}
	return procStart(e.t, name, e.bin, env, args...)
}

// committedLines is how many lines the group has committed.
func (e *eosEnv) committedLines() int64 {
	offs, _ := e.committed(eosJob, "lines")
	return stSum(offs)
}

// waitProgress waits until the group has committed n more lines than
// from, failing if p exits.
func (e *eosEnv) waitProgress(p *proc, from, n int64) {
	e.t.Helper()
	procWaitFor(e.t, stWait, fmt.Sprintf("%s to commit %d more lines", p.name, n), func() bool {
		p.running(e.t)
		return e.committedLines() >= min(from+n, int64(e.lines))
	})
}

// logged reports whether p has logged a line with message msg.
func logged(p *proc, msg string) bool {
	return strings.Contains(p.stderr.String(), `"@message":"`+msg+`"`)
}

// owned is how many tasks p held at its latest change of tasks.
func owned(p *proc) int64 {
	var n int64
	for _, e := range stParseLog(p.stderr.String()) {
		if strings.HasPrefix(e.msg(), "tasks ") {
			n = e.int("owned")
		}
	}
	return n
}

// logTransactions logs the state of the transactions of ids, to explain
// missing output (an open transaction holds read_committed readers back).
func (e *eosEnv) logTransactions(ids ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	txns, err := e.adm.DescribeTransactions(ctx, ids...)
	if err != nil {
		e.t.Logf("describe transactions: %v", err)
		return
	}
	for _, id := range ids {
		d := txns[id]
		e.t.Logf("transaction %q: state %s, producer %d epoch %d, started %s, partitions %v, err %v",
			id, d.State, d.ProducerID, d.ProducerEpoch, time.UnixMilli(d.StartTimestamp).Format(time.RFC3339Nano), d.Topics, d.Err)
	}
	for _, topic := range []string{"word-counts", eosJob + "-words-repartition", eosJob + "-counts-changelog"} {
		lso, err := e.adm.ListCommittedOffsets(ctx, topic)
		hwm, err2 := e.adm.ListEndOffsets(ctx, topic)
		if err != nil || err2 != nil {
			continue
		}
		lso.Each(func(o kadm.ListedOffset) {
			h, _ := hwm.Lookup(o.Topic, o.Partition)
			e.t.Logf("%s/%d: last stable offset %d, end %d", o.Topic, o.Partition, o.Offset, h.Offset)
		})
	}
}

// eosOutcome is what the output of a run holds, word by word.
type eosOutcome struct {
	outputs, duplicates, lost, over int64
	latest                          map[string]int64
}

// outcome reads the read_committed output: each word's counts should be
// 1, 2, ... up to its number of occurrences, each exactly once.
func (e *eosEnv) outcome() eosOutcome {
	e.t.Helper()
	out := e.readAll("word-counts")
	o := eosOutcome{outputs: int64(len(out)), latest: map[string]int64{}}
	seen := map[string]map[int64]int{}
	for _, r := range out {
		if len(r.Value) != 8 {
			e.t.Fatalf("word-counts/%d@%d: value %x is not a count", r.Partition, r.Offset, r.Value)
		}
		w, c := string(r.Key), int64(binary.BigEndian.Uint64(r.Value))
		if seen[w] == nil {
			seen[w] = map[int64]int{}
		}
		if seen[w][c]++; seen[w][c] > 1 {
			o.duplicates++
		}
		if c > e.want[w] {
			o.over++
		}
		o.latest[w] = c
	}
	for w, n := range e.want {
		for c := int64(1); c <= n; c++ {
			if seen[w][c] == 0 {
				o.lost++
			}
		}
	}
	return o
}

// crashLoop runs the word count under e.processing through kills SIGKILLs
// of its instances at random moments, some while an instance restores its
// stores from scratch and some while a second instance joins, restarting
// each time; then one instance runs to the end of the input.
func crashLoop(t *testing.T, processing string, kills int) {
	t.Parallel()
	e := newEOSEnv(t, processing)
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	e.produceLines(rng, 100_000)

	const delay = 400 * time.Microsecond
	dirA, dirB := t.TempDir(), t.TempDir()
	var restoreKills, rebalanceKills, killed int
	var restored []string // per run on a state directory that held state: records restored
	warm := func(p *proc) {
		total, _ := stRestored(stParseLog(p.stderr.String()))
		restored = append(restored, fmt.Sprint(total))
	}
	began := time.Now()
	for run := 0; killed < kills; run++ {
		from := e.committedLines()
		switch {
		case run%6 == 3:
			// A new disk: the instance restores every store from the
			// changelogs, and is killed as soon as it has its tasks.
			dirA = t.TempDir()
			p := e.start(fmt.Sprintf("run %d (empty state dir)", run), dirA, "a", delay)
			deadline := time.Now().Add(stWait)
			for !logged(p, "tasks assigned") {
				p.running(t)
				if time.Now().After(deadline) {
					t.Fatalf("%s got no tasks within %s", p.name, stWait)
				}
				time.Sleep(time.Millisecond)
			}
			p.kill(t)
			killed++
			if !logged(p, "restored tasks") {
				restoreKills++
			}
		case run%6 == 5 && killed+2 <= kills:
			// A second instance joins; the first is killed while the
			// tasks move, then the second after it made progress.
			a := e.start(fmt.Sprintf("run %d", run), dirA, "a", delay)
			e.waitProgress(a, from, 500)
			b := e.start(fmt.Sprintf("run %d (second instance)", run), dirB, "b", delay)
			procWaitFor(t, stWait, "the second instance to get tasks", func() bool {
				b.running(t)
				a.running(t)
				return owned(b) > 0
			})
			a.kill(t)
			rebalanceKills++
			e.waitProgress(b, e.committedLines(), 300+int64(rng.IntN(1000)))
			b.kill(t)
			killed += 2
			warm(a)
		default:
			p := e.start(fmt.Sprintf("run %d", run), dirA, "a", delay)
			e.waitProgress(p, from, 300+int64(rng.IntN(2000)))
			time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond) // mid-poll, mid-commit
			p.kill(t)
			killed++
			warm(p)
		}
	}
	killedAt := e.committedLines()

	procWaitFor(t, stWait, "the killed instances to leave the group", func() bool { return e.groupEmpty(eosJob) })
	final := e.start("final run", dirA, "a", 0, "--until-end")
	if code := final.wait(t, 3*stWait); code != 0 {
		t.Fatalf("the --until-end run exited with code %d", code)
	}
	if !e.allCommitted(eosJob, "lines") {
		t.Errorf("after the --until-end run the committed offsets are not the input's end")
	}

	changelog := stSum(e.ends(eosJob + "-counts-changelog"))
	t.Logf("changelog records restored by each restart on a state directory that held state (of %d in the changelog at the end): %s",
		changelog, strings.Join(restored, " "))
	o := e.outcome()
	var words int64
	for _, n := range e.want {
		words += n
	}
	t.Logf("%s: %d lines in (%d words), %d kills (%d while restoring, %d while a second instance joined), %d committed before the final run; "+
		"%d counts out, %d duplicates, %d over-counts, %d lost, in %s",
		processing, e.lines, words, killed, restoreKills, rebalanceKills, killedAt, o.outputs, o.duplicates, o.over, o.lost, time.Since(began).Round(time.Millisecond))
	if o.lost > 0 {
		t.Errorf("%d counts were never output: input lost", o.lost)
	}
	for w, n := range e.want {
		if o.latest[w] < n {
			t.Errorf("word %q: last count %d, want %d", w, o.latest[w], n)
			break
		}
	}
	if killedAt >= int64(e.lines) {
		t.Errorf("the killed runs processed every line: no kill was mid-stream")
	}
	if processing != "exactly-once" {
		return
	}
	if o.duplicates > 0 || o.over > 0 {
		t.Errorf("%d duplicate counts and %d counts above the exact ones under exactly-once", o.duplicates, o.over)
	}
	stCheckCounts(t, "the last output of each word", o.latest, e.want)
	stCheckCounts(t, "the changelog's latest values", stLatest(t, "changelog", e.readAll(eosJob+"-counts-changelog")), e.want)
	counts, _ := stStoreContents(t, dirA, eosJob, eosSub)
	stCheckCounts(t, "the final run's local stores", counts, e.want)
	if restoreKills == 0 {
		t.Logf("no kill landed inside a restore this time")
	}
}

func TestExactlyOnceCrashLoop(t *testing.T) { crashLoop(t, "exactly-once", 20) }

func TestAtLeastOnceCrashLoop(t *testing.T) { crashLoop(t, "at-least-once", 8) }

// A zombie: an instance paused (SIGSTOP) in the middle of a transaction
// until the group gives its tasks to another instance. When it resumes, its
// transaction cannot commit: it aborts, says so, and the instance rejoins.
func TestExactlyOnceZombieIsFenced(t *testing.T) {
	t.Parallel()
	e := newEOSEnv(t, "exactly-once")
	rng := rand.New(rand.NewPCG(1, 2))
	// Enough input, slowly enough, that the zombie is mid-transaction when
	// it is paused.
	e.produceLines(rng, 50_000)
	const delay = time.Millisecond

	a := e.start("instance a", t.TempDir(), "a", delay)
	e.waitProgress(a, 0, 1000)
	b := e.start("instance b", t.TempDir(), "b", delay)
	procWaitFor(t, stWait, "both instances to hold tasks", func() bool {
		a.running(t)
		b.running(t)
		return owned(a) > 0 && owned(b) > 0
	})
	e.waitProgress(a, e.committedLines(), 500)

	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	stopped := time.Now()
	procWaitFor(t, stWait, "instance b to take every task", func() bool {
		b.running(t)
		return owned(b) == eosAllTask
	})
	tookOver := time.Since(stopped)
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT: %v", err)
	}
	procWaitFor(t, stWait, "the zombie to abort its transaction", func() bool {
		a.running(t)
		return strings.Contains(a.stderr.String(), "transaction aborted")
	})
	procWaitFor(t, stWait, "the zombie to rejoin and get tasks again", func() bool {
		a.running(t)
		entries := stParseLog(a.stderr.String())
		aborted := false
		for _, en := range entries {
			switch {
			case strings.HasPrefix(en.msg(), "transaction aborted"):
				aborted = true
			case aborted && en.msg() == "tasks assigned" && en.int("owned") > 0:
				return true
			}
		}
		return false
	})
	procWaitFor(t, 2*stWait, "every line and every word to be committed", func() bool {
		a.running(t)
		b.running(t)
		// The lines first: the repartition topic's end is final then.
		return e.allCommitted(eosJob, "lines") && e.allCommitted(eosJob, eosJob+"-words-repartition")
	})
	for _, p := range []*proc{a, b} {
		if code := p.terminate(t, stWait); code != 0 {
			t.Errorf("%s exited with code %d", p.name, code)
		}
	}
	o := e.outcome()
	t.Logf("b took every task %s after a was paused; %d counts out, %d duplicates, %d over-counts, %d lost",
		tookOver.Round(time.Millisecond), o.outputs, o.duplicates, o.over, o.lost)
	if o.duplicates > 0 || o.over > 0 || o.lost > 0 {
		t.Errorf("the output is not exact: %d duplicates, %d over-counts, %d lost", o.duplicates, o.over, o.lost)
		e.logTransactions("a", "b")
	}
	stCheckCounts(t, "the last output of each word", o.latest, e.want)
}
