package runner_test

// Scale-out tests: tasks go back to the instance whose local stores are
// warm for them; with standby replicas, a killed instance's tasks resume
// on the instances keeping their standby copies, restoring only a short
// tail; three instances killed and restarted under exactly-once give
// exact results.

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// heldTasks replays an instance's "tasks ..." log lines (added and
// dropped tasks) and returns the tasks it holds at the end.
func heldTasks(entries []stEntry) map[string]bool {
	held := map[string]bool{}
	for _, e := range entries {
		if !strings.HasPrefix(e.msg(), "tasks ") {
			continue
		}
		for _, field := range []string{"added", "dropped"} {
			s, _ := e[field].(string)
			for _, id := range strings.Split(s, ",") {
				if id == "" {
					continue
				}
				if field == "added" {
					held[id] = true
				} else {
					delete(held, id)
				}
			}
		}
	}
	return held
}

// all returns the entries so far.
func (l *stLog) all() []stEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.entries)
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// An instance that comes back with local stores of the tasks it had gets
// those tasks back, though plain stickiness would give it others, and
// restores only what it missed.
func TestScaleOutWarmStoresGetTheirTasksBack(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	rng := rand.New(rand.NewPCG(6, 6))
	want := map[string]int64{}
	const job = "warmback"
	e.produceCounted("in", rng, 8_000, 400, want)

	dirA, dirB := t.TempDir(), t.TempDir()
	logA, logB := stNewLog(t), stNewLog(t)
	cfgA, cfgB := e.config(dirA, logA.logger("A")), e.config(dirB, logB.logger("B"))
	b := stStart(t, stCountJob(job, nil), cfgB)
	waitWithin(t, stWait, "B to process the input", func() bool { return e.allCommitted(job, "in") })
	stStart(t, stCountJob(job, nil), cfgA)
	waitWithin(t, stWait, "A to take its share of the tasks", func() bool {
		return len(heldTasks(logA.find("tasks assigned"))) == stPartitions/2 && len(logA.find("restored tasks")) > 0
	})
	e.produceCounted("in", rng, 4_000, 400, want)
	waitWithin(t, stWait, "A and B to process more input", func() bool { return e.allCommitted(job, "in") })
	tasksB := sortedKeys(heldTasks(logB.all()))
	// Plain stickiness: the first owner keeps the first tasks in order,
	// so A took the last ones. The test needs B to hold tasks that A
	// would keep if warmth did not count.
	if want := []string{"0_0", "0_1"}; !slices.Equal(tasksB, want) {
		t.Fatalf("B holds tasks %v, want %v", tasksB, want)
	}

	// B leaves; A takes B's tasks, restoring them from the changelog.
	b.stop(t, "B")
	waitWithin(t, stWait, "A to take every task", func() bool { return len(heldTasks(logA.all())) == stPartitions })
	e.produceCounted("in", rng, 4_000, 400, want)
	waitWithin(t, stWait, "A alone to process more input", func() bool { return e.allCommitted(job, "in") })

	// B comes back with its stores of 0_0 and 0_1, a little behind. A,
	// the leader, keeps 0_2 and 0_3 and gives B those. (B also holds
	// stale copies of 0_2 and 0_3, from when it ran alone; how far behind
	// they are, in changelog records, depends on how often A committed,
	// so the test removes them.)
	for _, id := range []string{"0_2", "0_3"} {
		if err := os.RemoveAll(filepath.Join(dirB, "tasks", id)); err != nil {
			t.Fatal(err)
		}
	}
	logB.reset()
	logA.reset()
	stStart(t, stCountJob(job, nil), cfgB)
	waitWithin(t, stWait, "B to get tasks and restore them", func() bool {
		return len(heldTasks(logB.all())) == stPartitions/2 && len(logB.find("restored tasks")) > 0
	})
	if got := sortedKeys(heldTasks(logB.all())); !slices.Equal(got, tasksB) {
		t.Errorf("B came back holding warm stores of %v and got %v", tasksB, got)
	}
	if found := logB.find("found local task stores"); len(found) == 0 {
		t.Errorf("B did not report its local stores")
	}
	changelogEnds := e.ends(job + "-" + stStore + "-changelog")
	for _, r := range logB.find("restored store") {
		var p int32
		fmt.Sscanf(r.task(), "0_%d", &p)
		if r.int("from") <= 0 || r.int("records") >= changelogEnds[p] {
			t.Errorf("B restored task %s: %d records from changelog offset %d (changelog end %d); want only the tail it missed",
				r.task(), r.int("records"), r.int("from"), changelogEnds[p])
		}
		t.Logf("B restored task %s: %d records from offset %d, of %d in its changelog", r.task(), r.int("records"), r.int("from"), changelogEnds[p])
	}
	// The first round of the cooperative move places the tasks; the
	// second completes it.
	balanced := logA.find("balanced the group's tasks")
	if !slices.ContainsFunc(balanced, func(e stEntry) bool { return e.int("placed_warm") >= 1 }) {
		t.Errorf("the leader's balance lines %v: want tasks placed on warm stores", balanced)
	}

	e.produceCounted("in", rng, 2_000, 400, want)
	waitWithin(t, stWait, "A and B to process the last input", func() bool { return e.allCommitted(job, "in") })
	e.checkChangelogAndOutput(t, job, "out", want)
}

// standbyCaughtUp returns the standby tasks of an instance that have
// caught up with their owners' last commits, from its log.
func standbyCaughtUp(entries []stEntry) map[string]bool {
	assigned, caught := map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		switch e.msg() {
		case "standby tasks assigned":
			clear(assigned)
			s, _ := e["standby"].(string)
			for _, id := range strings.Split(s, ",") {
				if id != "" {
					assigned[id] = true
				}
			}
		case "standby task caught up":
			caught[e.task()] = true
		case "standby task becomes active":
			delete(caught, e.task())
		}
	}
	for id := range caught {
		if !assigned[id] {
			delete(caught, id)
		}
	}
	return caught
}

// checkStatusStandbys runs the job's status command: every counting
// task has one standby, on a member other than its owner.
func checkStatusStandbys(t *testing.T, e *eosEnv) {
	t.Helper()
	p := procStart(t, "status", e.bin, nil, "status", "--brokers", e.addr, "--format", "json")
	if code := p.wait(t, stWait); code != 0 {
		t.Fatalf("status exited with code %d: %s", code, p.stderr.String())
	}
	var st struct {
		Members []struct {
			ID      string   `json:"id"`
			Tasks   []string `json:"tasks"`
			Standby []string `json:"standby"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(p.stdout.String()), &st); err != nil {
		t.Fatalf("status --format json: %v\n%s", err, p.stdout.String())
	}
	standbys := map[string]int{}
	for _, m := range st.Members {
		for _, id := range m.Standby {
			standbys[id]++
			if slices.Contains(m.Tasks, id) {
				t.Errorf("status: member %s holds task %s and its standby", m.ID, id)
			}
		}
	}
	for p := range stPartitions {
		if id := fmt.Sprintf("%d_%d", eosSub, p); standbys[id] != 1 {
			t.Errorf("status: task %s has %d standbys, want 1 (members %+v)", id, standbys[id], st.Members)
		}
	}
	if len(standbys) != stPartitions {
		t.Errorf("status: standbys %v, want one of each counting task only", standbys)
	}
}

// countTasks returns the tasks of the counting sub-topology of wordjob in
// held.
func countTasks(held map[string]bool) []string {
	var out []string
	for id := range held {
		if strings.HasPrefix(id, fmt.Sprintf("%d_", eosSub)) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Three instances of the word count with one standby replica per counting
// task, under exactly-once. Each is killed in turn (SIGKILL) mid-stream
// and restarted: the killed instance's counting tasks resume on the
// instances keeping their standby copies, which restore only the short
// tail their standbys had not applied yet, and the final output and
// state are exact.
func TestScaleOutStandbyFailoverExactlyOnce(t *testing.T) {
	t.Parallel()
	e := newEOSEnv(t, "exactly-once")
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	const delay = 300 * time.Microsecond
	names := []string{"a", "b", "c"}
	dirs := map[string]string{}
	procs := map[string]*proc{}
	start := func(name string, run int) {
		if dirs[name] == "" {
			dirs[name] = t.TempDir()
		}
		procs[name] = e.start(fmt.Sprintf("instance %s (run %d)", name, run), dirs[name], name, delay, "--standby-replicas", "1")
	}
	changelog := eosJob + "-counts-changelog"
	const minChangelog = 2000 // records per counting task, more each round
	repartition := eosJob + "-words-repartition"

	e.produceLines(rng, 20_000)
	for _, name := range names {
		start(name, 0)
	}
	for round, victim := range names {
		e.produceLines(rng, 20_000)
		from := e.committedLines()
		// Every counting task of the victim has a standby that caught
		// up, its changelog has grown, and the job is mid-stream.
		var moving []string
		procWaitFor(t, stWait, fmt.Sprintf("round %d: the victim's standbys to catch up", round), func() bool {
			caught := map[string]bool{}
			for _, name := range names {
				procs[name].running(t)
				if name != victim {
					maps.Copy(caught, standbyCaughtUp(stParseLog(procs[name].stderr.String())))
				}
			}
			moving = countTasks(heldTasks(stParseLog(procs[victim].stderr.String())))
			if len(moving) == 0 || e.committedLines() < from+2000 {
				return false
			}
			sizes := e.ends(changelog)
			for _, id := range moving {
				var p int32
				fmt.Sscanf(id, "1_%d", &p)
				if !caught[id] || sizes[p] < minChangelog*int64(round+1) {
					return false
				}
			}
			return true
		})
		if round == 0 {
			checkStatusStandbys(t, e)
		}
		totals := e.ends(changelog)
		seen := map[string]int{} // log entries of each survivor before the kill
		for _, name := range names {
			seen[name] = len(stParseLog(procs[name].stderr.String()))
		}
		committedBefore, _ := e.committed(eosJob, repartition)

		procs[victim].kill(t)
		killed := time.Now()
		promoted := map[string]string{} // task -> the survivor it resumed on
		restored := map[string]int64{}  // task -> records its restore read
		procWaitFor(t, stWait, fmt.Sprintf("round %d: the survivors to restore %v", round, moving), func() bool {
			for _, name := range names {
				if name == victim {
					continue
				}
				procs[name].running(t)
				for _, en := range stParseLog(procs[name].stderr.String())[seen[name]:] {
					switch en.msg() {
					case "standby task becomes active":
						promoted[en.task()] = name
					case "restored store":
						if slices.Contains(moving, en.task()) {
							restored[en.task()] = en.int("records")
							t.Logf("round %d: %s restored task %s: %d records, changelog offsets %d to %d", round, name, en.task(), en.int("records"), en.int("from"), en.int("to"))
						}
					}
				}
			}
			return len(restored) == len(moving)
		})
		restoredAfter := time.Since(killed)
		// The counting tasks' input offsets move again. (Records the
		// killed instance's open transaction wrote hold read_committed
		// readers back until the brokers abort it, after the transaction
		// timeout, or until the instance restarts with the same
		// transactional ID.)
		procWaitFor(t, stWait, fmt.Sprintf("round %d: the moved counting tasks to commit", round), func() bool {
			offs, _ := e.committed(eosJob, repartition)
			for _, id := range moving {
				var p int32
				fmt.Sscanf(id, "1_%d", &p)
				if offs[p] <= committedBefore[p] {
					return false
				}
			}
			return true
		})
		resumedAfter := time.Since(killed)
		var sum, total int64
		for _, id := range moving {
			var p int32
			fmt.Sscanf(id, "1_%d", &p)
			sum += restored[id]
			total += totals[p]
			if promoted[id] == "" {
				t.Errorf("round %d: task %s of the killed instance %s resumed without a standby copy", round, id, victim)
			}
			if restored[id]*4 > totals[p] {
				t.Errorf("round %d: task %s restored %d of the %d records of its changelog: want a short tail", round, id, restored[id], totals[p])
				for _, name := range names {
					for _, en := range stParseLog(procs[name].stderr.String()) {
						if strings.Contains(en.msg(), "standby") || en.task() == id {
							t.Logf("%s logged: %v", name, en)
						}
					}
				}
			}
		}
		t.Logf("round %d: killed instance %s, holding counting tasks %v; they resumed on %v, restoring %d of their %d changelog records: running again %s after the kill, committing again after %s",
			round, victim, moving, promoted, sum, total, restoredAfter.Round(time.Millisecond), resumedAfter.Round(time.Millisecond))

		start(victim, round+1)
		procWaitFor(t, stWait, fmt.Sprintf("round %d: the restarted instance to get tasks", round), func() bool {
			procs[victim].running(t)
			return owned(procs[victim]) > 0
		})
	}

	procWaitFor(t, 3*stWait, "every line and every word to be committed", func() bool {
		for _, p := range procs {
			p.running(t)
		}
		return e.allCommitted(eosJob, "lines") && e.allCommitted(eosJob, repartition)
	})
	for _, name := range names {
		if code := procs[name].terminate(t, stWait); code != 0 {
			t.Errorf("instance %s exited with code %d", name, code)
		}
	}
	o := e.outcome()
	t.Logf("%d lines; %d counts out, %d duplicates, %d over-counts, %d lost", e.lines, o.outputs, o.duplicates, o.over, o.lost)
	if o.duplicates > 0 || o.over > 0 || o.lost > 0 {
		t.Errorf("the output is not exact: %d duplicates, %d over-counts, %d lost", o.duplicates, o.over, o.lost)
		e.logTransactions(names...)
	}
	stCheckCounts(t, "the last output of each word", o.latest, e.want)
	stCheckCounts(t, "the changelog's latest values", stLatest(t, "changelog", e.readAll(changelog)), e.want)
}
