package assign_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/internal/assign"
)

// copies is who holds a copy of which task's stores, and how far behind
// it is: member -> task -> lag.
type copies map[int]map[assign.Task]int64

func (c copies) lag(m int, t assign.Task) (int64, bool) {
	l, ok := c[m][t]
	return l, ok
}

func task(sub int, p int32) assign.Task { return assign.Task{Sub: sub, Partition: p} }

// A member leaves: each of its tasks goes to the member with the warmest
// copy of it (its standby), not to the least loaded.
func TestAssignWarmLeaverTasksGoToWarmCopies(t *testing.T) {
	all := tasks(6)
	before := [][]assign.Task{
		{task(0, 0), task(0, 3)},
		{task(0, 1), task(0, 4)},
		{task(0, 2), task(0, 5)},
	}
	// Member 2 leaves; member 0 of the new group (old 1) holds a warm
	// copy of 0_2, member 1 (old 0) of 0_5 and a colder one of 0_2.
	warm := copies{0: {task(0, 2): 10}, 1: {task(0, 5): 3, task(0, 2): 500}}
	after := assign.AssignWarm(2, all, ownersOf(before, []int{1, 0, -1}), warm.lag, nil)
	checkBalanced(t, 2, all, after)
	if !slices.Contains(after[0], task(0, 2)) || !slices.Contains(after[1], task(0, 5)) {
		t.Errorf("assignment %v: want 0_2 with member 0 and 0_5 with member 1, which hold their warmest copies", after)
	}
	// Stickiness is intact: the members kept what they owned.
	if !isSubset(before[1], after[0]) || !isSubset(before[0], after[1]) {
		t.Errorf("assignment %v: a staying member lost a task", after)
	}
}

// A member that comes back with warm copies of its old tasks gets those
// back: the members that took them give up those tasks rather than others.
func TestAssignWarmRejoinGetsItsTasksBack(t *testing.T) {
	all := tasks(4, 4)
	three := assign.Assign(3, all, noOwner)
	// Member 2 is gone for a while: the other two take its tasks.
	two := assign.Assign(2, all, ownersOf(three, []int{0, 1, -1}))
	// It comes back holding copies of its old tasks, somewhat behind.
	warm := copies{2: {}}
	for i, t := range three[2] {
		warm[2][t] = int64(100 + i)
	}
	back := assign.AssignWarm(3, all, ownersOf(two, []int{0, 1}), warm.lag, nil)
	checkBalanced(t, 3, all, back)
	if !reflect.DeepEqual(back[2], three[2]) {
		t.Errorf("the returning member got %v; it holds warm copies of %v", back[2], three[2])
	}
	// Without the copies it gets tasks all the same, not necessarily its own.
	cold := assign.Assign(3, all, ownersOf(two, []int{0, 1}))
	checkBalanced(t, 3, all, cold)
}

// Given any history, any copies and any mix of stateful and stateless
// tasks, the assignment stays balanced, keeps as many owned stateful
// tasks in place as plain stickiness does, and is deterministic.
func TestAssignWarmBalancedAndSticky(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		n := 1 + rng.IntN(6)
		all := tasks(int32(rng.IntN(12)), int32(rng.IntN(5)), int32(rng.IntN(7)))
		var stateful func(assign.Task) bool
		switch rng.IntN(3) {
		case 1:
			stateful = func(t assign.Task) bool { return t.Sub == 1 }
		case 2:
			stateful = func(t assign.Task) bool { return t.Sub != 0 }
		}
		owner := map[assign.Task]int{}
		warm := copies{}
		for _, t := range all {
			if rng.IntN(4) > 0 {
				owner[t] = rng.IntN(n + 1) // n: a member that left
			}
			for m := range n {
				if rng.IntN(3) == 0 {
					if warm[m] == nil {
						warm[m] = map[assign.Task]int64{}
					}
					warm[m][t] = int64(rng.IntN(1000))
				}
			}
		}
		ownerOf := func(t assign.Task) (int, bool) { m, ok := owner[t]; return m, ok }
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got := assign.AssignWarm(n, all, ownerOf, warm.lag, stateful)
			checkBalanced(t, n, all, got)
			plain := assign.AssignWarm(n, all, ownerOf, nil, stateful)
			if kept, plainKept := keptCount(got, ownerOf, stateful), keptCount(plain, ownerOf, stateful); kept != plainKept {
				t.Errorf("%d owned stateful tasks stay in place, %d without copies", kept, plainKept)
			}
			if again := assign.AssignWarm(n, all, ownerOf, warm.lag, stateful); !reflect.DeepEqual(again, got) {
				t.Errorf("assigned %v, then %v", got, again)
			}
		})
	}
}

// keptCount counts the stateful tasks (all if stateful is nil) that stay
// with their owners.
func keptCount(out [][]assign.Task, owner func(assign.Task) (int, bool), stateful func(assign.Task) bool) (n int) {
	for m, ts := range out {
		for _, t := range ts {
			if o, ok := owner(t); ok && o == m && (stateful == nil || stateful(t)) {
				n++
			}
		}
	}
	return n
}

// Standby replicas: min(N, members-1) per stateful task, never on its
// active member, never two on one member, spread evenly, and they stay
// where warm copies are.
func TestAssignStandbys(t *testing.T) {
	stateful := func(t assign.Task) bool { return t.Sub == 0 }
	for _, tc := range []struct {
		members, replicas int
		partitions        []int32
	}{
		{1, 1, []int32{4}},
		{2, 1, []int32{4, 2}},
		{3, 1, []int32{8}},
		{3, 2, []int32{8, 3}},
		{3, 5, []int32{4}},
		{5, 2, []int32{7, 7}},
	} {
		t.Run(fmt.Sprintf("%d members, %d replicas, %v", tc.members, tc.replicas, tc.partitions), func(t *testing.T) {
			all := tasks(tc.partitions...)
			active := assign.Assign(tc.members, all, noOwner)
			sb := assign.AssignStandbys(tc.members, active, tc.replicas, stateful, nil)
			want := min(tc.replicas, tc.members-1)
			checkStandbys(t, active, sb, all, stateful, want)
		})
	}

	// Existing warm copies keep their standbys.
	all := tasks(6)
	active := assign.Assign(3, all, noOwner)
	first := assign.AssignStandbys(3, active, 1, stateful, nil)
	warm := copies{}
	for m, ts := range first {
		warm[m] = map[assign.Task]int64{}
		for _, t := range ts {
			warm[m][t] = 1
		}
	}
	if again := assign.AssignStandbys(3, active, 1, stateful, warm.lag); !reflect.DeepEqual(again, first) {
		t.Errorf("standbys moved from %v to %v, away from their warm copies", first, again)
	}
}

func checkStandbys(t *testing.T, active, sb [][]assign.Task, all []assign.Task, stateful func(assign.Task) bool, want int) {
	t.Helper()
	activeOf := map[assign.Task]int{}
	for m, ts := range active {
		for _, task := range ts {
			activeOf[task] = m
		}
	}
	count := map[assign.Task]int{}
	total := 0
	load := make([]int, len(sb)) // stateful tasks held, active or standby
	for _, task := range all {
		if stateful(task) {
			load[activeOf[task]]++
			total++
		}
	}
	for m, ts := range sb {
		load[m] += len(ts)
		seen := map[assign.Task]bool{}
		for _, task := range ts {
			if activeOf[task] == m {
				t.Errorf("member %d has task %v active and standby", m, task)
			}
			if seen[task] {
				t.Errorf("member %d has two standbys of %v", m, task)
			}
			seen[task] = true
			count[task]++
			total++
		}
	}
	for _, task := range all {
		if w := want * boolInt(stateful(task)); count[task] != w {
			t.Errorf("task %v has %d standbys, want %d", task, count[task], w)
		}
	}
	share := (total + len(sb) - 1) / max(1, len(sb))
	for m := range sb {
		if load[m] > share {
			t.Errorf("member %d holds %d stateful tasks (active and standby); %d over %d members allow %d each (active %v, standby %v)",
				m, load[m], total, len(sb), share, active, sb)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// warmMember adds a member to g whose metadata reports local copies of
// the given tasks at the given changelog offsets, as a running member's
// balancer does.
func (g *group) warmMember(id string, gen int32, owned map[string][]int32, local map[assign.Task]int64) {
	bal := assign.New(nil, assign.Options{Local: func() map[assign.Task]int64 { return local }})
	g.members = append(g.members, kmsg.JoinGroupResponseMember{
		MemberID:         id,
		ProtocolMetadata: bal.JoinGroupMetadata(slices.Sorted(maps.Keys(g.topics)), owned, gen),
	})
}

// Over the group protocol: the offsets members report in their metadata
// decide where a task with no owner goes, and each member finds its
// standby tasks in its assignment; a member of an older samsa (no user
// data) takes part all the same.
func TestBalanceWarmAndStandbysOverTheProtocol(t *testing.T) {
	subs := [][]string{{"clicks"}, {"counts-repartition"}}
	var logged []any
	bal := assign.New(subs, assign.Options{
		Standbys: 1,
		Stateful: func(sub int) bool { return sub == 1 },
		Log:      func(msg string, kv ...any) { logged = append(logged, msg) },
	})
	g := &group{bal: bal, topics: map[string]int32{"clicks": 2, "counts-repartition": 2}}
	// A fresh group: m1 holds the most advanced copy of task 1_0, m2 an
	// older one; m3 runs an older samsa and reports nothing.
	g.warmMember("m1", -1, nil, map[assign.Task]int64{task(1, 0): 900})
	g.warmMember("m2", -1, nil, map[assign.Task]int64{task(1, 0): 850, task(1, 1): 40})
	g.join("m3", -1, nil)

	mb, interests, err := bal.MemberBalancer(g.members)
	if err != nil {
		t.Fatal(err)
	}
	topics := map[string]int32{}
	for tp := range interests {
		topics[tp] = g.topics[tp]
	}
	into, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(topics)
	if err != nil {
		t.Fatal(err)
	}
	plan := map[string]map[string][]int32{}
	standbys := map[string][]assign.Task{}
	for _, a := range into.IntoSyncAssignment() {
		var got assign.Assignment
		member := assign.New(subs, assign.Options{OnAssigned: func(a assign.Assignment) { got = a }})
		parts, err := member.ParseSyncAssignment(a.MemberAssignment)
		if err != nil {
			t.Fatalf("%s: %v", a.MemberID, err)
		}
		plan[a.MemberID], standbys[a.MemberID] = parts, got.Standby
		if len(got.Incoming) > 0 {
			t.Errorf("%s: incoming tasks %v in a group where nobody owned anything", a.MemberID, got.Incoming)
		}
		var active []assign.Task
		for topic, ps := range parts {
			for _, p := range ps {
				active = append(active, task(slices.IndexFunc(subs, func(s []string) bool { return s[0] == topic }), p))
			}
		}
		if !sameTasks(active, got.Active) {
			t.Errorf("%s: partitions %v, active tasks %v", a.MemberID, parts, got.Active)
		}
		// kgo's own parser, as a member of an older samsa uses it, reads
		// the same partitions.
		if old, err := kgo.ParseConsumerSyncAssignment(a.MemberAssignment); err != nil || !reflect.DeepEqual(old, parts) {
			t.Errorf("%s: kgo parses %v (%v), we parse %v", a.MemberID, old, err, parts)
		}
	}
	checkTasks(t, subs, plan)
	if !slices.Contains(plan["m1"]["counts-repartition"], 0) {
		t.Errorf("plan %v: task 1_0 should go to m1, which holds its most advanced copy", plan)
	}
	if !slices.Contains(plan["m2"]["counts-repartition"], 1) {
		t.Errorf("plan %v: task 1_1 should go to m2, the only member with a copy", plan)
	}
	var all []assign.Task
	for _, ts := range standbys {
		all = append(all, ts...)
	}
	slices.SortFunc(all, func(a, b assign.Task) int { return int(a.Partition-b.Partition)*10 + a.Sub - b.Sub })
	if want := []assign.Task{task(1, 0), task(1, 1)}; !slices.Equal(all, want) {
		t.Errorf("standbys %v, want one each of %v (stateful tasks only)", standbys, want)
	}
	if slices.Contains(standbys["m1"], task(1, 0)) || slices.Contains(standbys["m2"], task(1, 1)) {
		t.Errorf("standbys %v: a standby on its task's active member", standbys)
	}
	// m2's copy of 1_0 is the warmest one left: it keeps it warm.
	if !slices.Contains(standbys["m2"], task(1, 0)) {
		t.Errorf("standbys %v: m2 should keep its copy of 1_0 warm", standbys)
	}
	if len(logged) != 1 {
		t.Errorf("the leader logged %d lines, want one", len(logged))
	}
}

// Stateful tasks are spread evenly among themselves, stateless ones even
// out the totals.
func TestAssignWarmSpreadsStatefulTasks(t *testing.T) {
	stateful := func(t assign.Task) bool { return t.Sub == 1 }
	for _, tc := range []struct {
		members    int
		partitions []int32
	}{{2, []int32{4, 4}}, {3, []int32{4, 4}}, {3, []int32{2, 7}}, {4, []int32{9, 3}}, {5, []int32{1, 12}}} {
		all := tasks(tc.partitions...)
		out := assign.AssignWarm(tc.members, all, noOwner, nil, stateful)
		checkBalanced(t, tc.members, all, out)
		nStateful := int(tc.partitions[1])
		for m, ts := range out {
			var s int
			for _, task := range ts {
				s += boolInt(stateful(task))
			}
			if s < nStateful/tc.members || s > nStateful/tc.members+1 {
				t.Errorf("%d members over %v: member %d has %d stateful tasks (%v), want %d or %d",
					tc.members, tc.partitions, m, s, ts, nStateful/tc.members, nStateful/tc.members+1)
			}
		}
	}
}

// With one standby replica, when any member of a fresh group fails, each
// of its stateful tasks moves to a member holding its standby copy, for
// every group of up to six members and up to sixteen partitions, also
// when every member holds stale copies of every task (as members that
// once ran them do).
func TestAssignFailoverToStandbys(t *testing.T) {
	for _, stale := range []bool{false, true} {
		t.Run(fmt.Sprintf("stale copies %v", stale), func(t *testing.T) { failoverToStandbys(t, stale) })
	}
}

func failoverToStandbys(t *testing.T, stale bool) {
	stateful := func(t assign.Task) bool { return t.Sub == 1 }
	for n := 2; n <= 6; n++ {
		for p := int32(1); p <= 16; p++ {
			all := tasks(p, p)
			active := assign.AssignWarm(n, all, noOwner, nil, stateful)
			sb := assign.AssignStandbys(n, active, 1, stateful, nil)
			for victim := range n {
				at := make([]int, n) // each member's index once victim is gone
				for m := range n {
					at[m] = m - boolInt(m > victim)
				}
				at[victim] = -1
				warm := copies{}
				for m := range n {
					if m == victim {
						continue
					}
					warm[at[m]] = map[assign.Task]int64{}
					if stale {
						for _, task := range all {
							warm[at[m]][task] = 50_000
						}
					}
					for _, task := range sb[m] {
						warm[at[m]][task] = 5 // a standby a little behind
					}
					for _, task := range active[m] {
						if stateful(task) {
							warm[at[m]][task] = 0
						}
					}
				}
				after := assign.AssignWarm(n-1, all, ownersOf(active, at), warm.lag, stateful)
				checkBalanced(t, n-1, all, after)
				for m, ts := range after {
					for _, task := range ts {
						if l, ok := warm[m][task]; (!ok || l > 5) && stateful(task) && slices.Contains(active[victim], task) {
							t.Errorf("%d members, %d partitions, member %d fails: its task %v moves to a member with no copy (active %v, standbys %v, after %v)",
								n, p, victim, task, active, sb, after)
						}
					}
				}
			}
		}
	}
}

func sameTasks(a, b []assign.Task) bool {
	key := func(t assign.Task) string { return fmt.Sprint(t) }
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i, t := range a {
		as[i] = key(t)
	}
	for i, t := range b {
		bs[i] = key(t)
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

// In the first round of a cooperative move, the member a task moves to
// learns that it is coming (and keeps a copy warm); in the second it is
// assigned.
func TestBalanceIncomingTasks(t *testing.T) {
	subs := [][]string{{"in"}}
	g := &group{bal: assign.New(subs, assign.Options{}), topics: map[string]int32{"in": 4}}
	g.join("m1", 3, map[string][]int32{"in": {0, 1, 2, 3}})
	g.join("m2", -1, nil)
	assignments := func() map[string]assign.Assignment {
		mb, _, err := g.bal.MemberBalancer(g.members)
		if err != nil {
			t.Fatal(err)
		}
		into, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(g.topics)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]assign.Assignment{}
		for _, a := range into.IntoSyncAssignment() {
			_, parsed, err := g.bal.ParseAssignment(a.MemberAssignment)
			if err != nil {
				t.Fatal(err)
			}
			out[a.MemberID] = parsed
		}
		return out
	}
	first := assignments()
	if len(first["m2"].Active) != 0 || !sameTasks(first["m2"].Incoming, []assign.Task{task(0, 2), task(0, 3)}) {
		t.Errorf("round 1: m2 got %+v; want nothing active and 0_2, 0_3 incoming", first["m2"])
	}
	if !sameTasks(first["m1"].Active, []assign.Task{task(0, 0), task(0, 1)}) || len(first["m1"].Incoming) != 0 {
		t.Errorf("round 1: m1 got %+v; want 0_0 and 0_1 active", first["m1"])
	}
	g.members = nil
	g.join("m1", 4, map[string][]int32{"in": {0, 1}})
	g.join("m2", 4, nil)
	second := assignments()
	if !sameTasks(second["m2"].Active, []assign.Task{task(0, 2), task(0, 3)}) || len(second["m2"].Incoming) != 0 {
		t.Errorf("round 2: m2 got %+v; want 0_2 and 0_3 active", second["m2"])
	}
}

// A group run as kgo runs it: every member has its own balancer, reports
// what it owns and holds, and a cooperative move takes two rounds. A
// member joining a group whose other member holds warm copies of every
// stateful task gets its share within two rounds, and the group then
// stays as it is: no rebalance loop, whatever the copies report.
func TestBalanceCooperativeJoinSettles(t *testing.T) {
	subs := [][]string{{"lines"}, {"words-repartition"}}
	topics := map[string]int32{"lines": 4, "words-repartition": 4}
	stateful := func(sub int) bool { return sub == 1 }
	type member struct {
		id    string
		bal   *assign.Balancer
		owned map[string][]int32
		local map[assign.Task]int64
		gen   int32
		a     assign.Assignment
	}
	newMember := func(id string) *member {
		m := &member{id: id, local: map[assign.Task]int64{}, gen: -1}
		m.bal = assign.New(subs, assign.Options{
			Stateful:   stateful,
			Local:      func() map[assign.Task]int64 { return maps.Clone(m.local) },
			OnAssigned: func(a assign.Assignment) { m.a = a },
		})
		return m
	}
	m1, m2 := newMember("m1"), newMember("m2")
	m1.owned = map[string][]int32{"lines": {0, 1, 2, 3}, "words-repartition": {0, 1, 2, 3}}
	m1.gen = 1
	for p := range int32(4) {
		m1.local[task(1, p)] = 1000
	}
	members := []*member{m1, m2}
	var history []string
	gen := int32(2)
	for round := range 6 {
		var join []kmsg.JoinGroupResponseMember
		for _, m := range members {
			join = append(join, kmsg.JoinGroupResponseMember{
				MemberID:         m.id,
				ProtocolMetadata: m.bal.JoinGroupMetadata(slices.Sorted(maps.Keys(topics)), m.owned, m.gen),
			})
		}
		mb, _, err := m1.bal.MemberBalancer(join) // m1 leads
		if err != nil {
			t.Fatal(err)
		}
		into, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(topics)
		if err != nil {
			t.Fatal(err)
		}
		revoked := false
		plan := map[string]map[string][]int32{}
		for _, sa := range into.IntoSyncAssignment() {
			m := members[slices.IndexFunc(members, func(m *member) bool { return m.id == sa.MemberID })]
			parts, err := m.bal.ParseSyncAssignment(sa.MemberAssignment)
			if err != nil {
				t.Fatal(err)
			}
			for topic, ps := range m.owned {
				for _, p := range ps {
					if !slices.Contains(parts[topic], p) {
						revoked = true
					}
				}
			}
			plan[m.id] = parts
			m.owned, m.gen = parts, gen
			for _, tk := range m.a.Active {
				if stateful(tk.Sub) {
					m.local[tk] += 10 // it processes, its copy moves on
				}
			}
		}
		checkTasks(t, subs, plan)
		history = append(history, fmt.Sprint(plan))
		gen++
		if !revoked {
			// kgo rejoins only after revoking: the group is settled.
			if round > 1 {
				t.Errorf("settled after %d rounds, want 2:\n%s", round+1, strings.Join(history, "\n"))
			}
			n1, n2 := len(m1.a.Active), len(m2.a.Active)
			if n1 != 4 || n2 != 4 {
				t.Errorf("settled with %d and %d tasks, want 4 each", n1, n2)
			}
			if s := keptStateful(m2.a.Active, stateful); s != 2 {
				t.Errorf("m2 got %d stateful tasks, want its share, 2", s)
			}
			return
		}
	}
	t.Fatalf("no settled assignment after 6 rounds:\n%s", strings.Join(history, "\n"))
}

func keptStateful(ts []assign.Task, stateful func(int) bool) (n int) {
	for _, t := range ts {
		if stateful(t.Sub) {
			n++
		}
	}
	return n
}
