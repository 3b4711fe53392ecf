package assign_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/internal/assign"
)

// tasks returns the tasks of sub-topologies with the given partition
// counts.
func tasks(partitions ...int32) []assign.Task {
	var ts []assign.Task
	for s, n := range partitions {
		for p := range n {
			ts = append(ts, assign.Task{Sub: s, Partition: p})
		}
	}
	return ts
}

// noOwner is the owner function of a group with no history.
func noOwner(assign.Task) (int, bool) { return 0, false }

// ownersOf returns the owner function of a previous assignment, with
// member i of prev now at index at[i] (-1: gone).
func ownersOf(prev [][]assign.Task, at []int) func(assign.Task) (int, bool) {
	owner := map[assign.Task]int{}
	for i, ts := range prev {
		for _, t := range ts {
			if at[i] >= 0 {
				owner[t] = at[i]
			}
		}
	}
	return func(t assign.Task) (int, bool) {
		m, ok := owner[t]
		return m, ok
	}
}

// checkBalanced checks that out gives every task to exactly one of n
// members, each member len(all)/n tasks or one more.
func checkBalanced(t *testing.T, n int, all []assign.Task, out [][]assign.Task) {
	t.Helper()
	if len(out) != n {
		t.Fatalf("%d members in the assignment, want %d", len(out), n)
	}
	count := map[assign.Task]int{}
	for m, ts := range out {
		if n > 0 && (len(ts) < len(all)/n || len(ts) > len(all)/n+1) {
			t.Errorf("member %d has %d tasks; with %d tasks over %d members want %d or %d", m, len(ts), len(all), n, len(all)/n, len(all)/n+1)
		}
		for _, task := range ts {
			count[task]++
		}
	}
	for _, task := range all {
		if n > 0 && count[task] != 1 {
			t.Errorf("task %v assigned %d times", task, count[task])
		}
		delete(count, task)
	}
	for task := range count {
		t.Errorf("task %v assigned, but it does not exist", task)
	}
}

func TestAssignBalances(t *testing.T) {
	for _, tc := range []struct {
		members    int
		partitions []int32 // per sub-topology
	}{
		{0, []int32{4}},
		{1, []int32{4}},
		{1, nil},
		{3, nil},
		{2, []int32{4}},
		{3, []int32{4}},
		{4, []int32{4}},
		{5, []int32{4}},
		{3, []int32{4, 4, 2}},
		{4, []int32{7, 3}},
		{7, []int32{64, 12, 1}},
	} {
		t.Run(fmt.Sprintf("%d members over %v", tc.members, tc.partitions), func(t *testing.T) {
			all := tasks(tc.partitions...)
			checkBalanced(t, tc.members, all, assign.Assign(tc.members, all, noOwner))
		})
	}
}

// When members join or leave, the members that stay keep their tasks as
// far as balance allows: a join only takes tasks away from the members
// already there (and only what the newcomers need), a leave only adds
// the leavers' tasks to the others.
func TestAssignSticky(t *testing.T) {
	for _, tc := range []struct {
		name       string
		partitions []int32
		before     int
		at         []int // index of each member of before in after; -1 if it left
		after      int
	}{
		{"join at the end", []int32{4, 4}, 2, []int{0, 1}, 3},
		{"join at the front", []int32{4, 4}, 2, []int{1, 2}, 3},
		{"join in the middle", []int32{8, 3}, 3, []int{0, 2, 3}, 4},
		{"two join", []int32{16}, 2, []int{0, 3}, 4},
		{"first joiner", []int32{4, 2}, 1, []int{1}, 2},
		{"leave at the end", []int32{4, 4}, 3, []int{0, 1, -1}, 2},
		{"leave at the front", []int32{4, 4}, 3, []int{-1, 0, 1}, 2},
		{"two leave", []int32{10, 10, 1}, 5, []int{0, -1, 1, -1, 2}, 3},
		{"last but one leaves", []int32{3}, 2, []int{-1, 0}, 1},
		{"same members, reordered", []int32{4, 4}, 3, []int{2, 0, 1}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all := tasks(tc.partitions...)
			before := assign.Assign(tc.before, all, noOwner)
			after := assign.Assign(tc.after, all, ownersOf(before, tc.at))
			checkBalanced(t, tc.after, all, after)

			for i, to := range tc.at {
				if to < 0 {
					continue
				}
				had, has := before[i], after[to]
				switch {
				case tc.after > tc.before && !isSubset(has, had):
					t.Errorf("member %d (now %d) had %v, has %v: on a join it should only lose tasks", i, to, had, has)
				case tc.after < tc.before && !isSubset(had, has):
					t.Errorf("member %d (now %d) had %v, has %v: on a leave it should only gain tasks", i, to, had, has)
				case tc.after == tc.before && !slices.Equal(had, has):
					t.Errorf("member %d (now %d) had %v, has %v: with the same members nothing should move", i, to, had, has)
				}
			}
		})
	}
}

func isSubset(sub, super []assign.Task) bool {
	for _, t := range sub {
		if !slices.Contains(super, t) {
			return false
		}
	}
	return true
}

// A claim no member can keep (an unknown member, or more than a fair
// share) is dropped, and the result is balanced all the same.
func TestAssignUnusableClaims(t *testing.T) {
	all := tasks(6)
	for _, tc := range []struct {
		name  string
		owner func(assign.Task) (int, bool)
	}{
		{"claims by members that are gone", func(t assign.Task) (int, bool) { return int(t.Partition) - 3, true }},
		{"one member claims everything", func(assign.Task) (int, bool) { return 1, true }},
		{"claims by a negative member index", func(assign.Task) (int, bool) { return -1, true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkBalanced(t, 3, all, assign.Assign(3, all, tc.owner))
		})
	}
	// The member that claims everything keeps its fair share of it.
	out := assign.Assign(3, all, func(assign.Task) (int, bool) { return 1, true })
	if len(out[1]) != 2 {
		t.Errorf("the member that owned all 6 tasks keeps %d, want 2", len(out[1]))
	}
}

// The assignment depends only on the members and the set of tasks, not
// on the order the tasks are listed in, and is the same every time.
func TestAssignDeterministic(t *testing.T) {
	all := tasks(12, 5, 3)
	prev := assign.Assign(3, all, noOwner)
	owner := ownersOf(prev, []int{0, 2, 3})
	want := assign.Assign(5, all, owner)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		shuffled := slices.Clone(all)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := assign.Assign(5, shuffled, owner); !reflect.DeepEqual(got, want) {
			t.Fatalf("tasks in another order give %v, want %v", got, want)
		}
	}
}

// group is a consumer group as its leader sees it in a JoinGroup response.
type group struct {
	bal     *assign.Balancer
	topics  map[string]int32
	members []kmsg.JoinGroupResponseMember
}

// join adds a member that owns the given partitions as of generation gen.
func (g *group) join(id string, gen int32, owned map[string][]int32) {
	g.members = append(g.members, kmsg.JoinGroupResponseMember{
		MemberID:         id,
		ProtocolMetadata: g.bal.JoinGroupMetadata(slices.Sorted(maps.Keys(g.topics)), owned, gen),
	})
}

// balance runs the balancer as kgo's group leader does and returns each
// member's assignment as the member parses it.
func (g *group) balance(t *testing.T) map[string]map[string][]int32 {
	t.Helper()
	mb, interests, err := g.bal.MemberBalancer(g.members)
	if err != nil {
		t.Fatalf("MemberBalancer: %v", err)
	}
	topics := map[string]int32{}
	for topic := range interests {
		topics[topic] = g.topics[topic]
	}
	plan, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(topics)
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	out := map[string]map[string][]int32{}
	for _, a := range plan.IntoSyncAssignment() {
		parts, err := g.bal.ParseSyncAssignment(a.MemberAssignment)
		if err != nil {
			t.Fatalf("member %s: %v", a.MemberID, err)
		}
		out[a.MemberID] = parts
	}
	return out
}

// owners returns, for each topic and partition, the members assigned it.
func owners(plan map[string]map[string][]int32) map[string]map[int32][]string {
	out := map[string]map[int32][]string{}
	for _, m := range slices.Sorted(maps.Keys(plan)) {
		for topic, ps := range plan[m] {
			if out[topic] == nil {
				out[topic] = map[int32][]string{}
			}
			for _, p := range ps {
				out[topic][p] = append(out[topic][p], m)
			}
		}
	}
	return out
}

// checkTasks checks that plan assigns whole tasks: partition p of every
// input of a sub-topology to one member, and no partition to two members.
// It returns how many tasks each member got.
func checkTasks(t *testing.T, subs [][]string, plan map[string]map[string][]int32) map[string]int {
	t.Helper()
	own := owners(plan)
	for topic, ps := range own {
		for p, ms := range ps {
			if len(ms) > 1 {
				t.Errorf("%s/%d assigned to %v", topic, p, ms)
			}
		}
	}
	perMember := map[string]int{}
	for s, inputs := range subs {
		for p := int32(0); ; p++ {
			var holders []string
			for _, topic := range inputs {
				holders = append(holders, own[topic][p]...)
			}
			if len(holders) == 0 {
				break
			}
			if len(holders) != len(inputs) || slices.ContainsFunc(holders, func(h string) bool { return h != holders[0] }) {
				t.Errorf("task %d_%d split: partition %d of %v goes to %v", s, p, p, inputs, holders)
				continue
			}
			perMember[holders[0]]++
		}
	}
	return perMember
}

// Balance assigns whole tasks over the group protocol: co-partitioned
// inputs go together, the tasks are spread evenly, and a member that
// joins gets its share only after the current owners gave it up
// (cooperative), without splitting a task in between.
func TestBalanceCopartitionedTasks(t *testing.T) {
	subs := [][]string{{"clicks", "views"}, {"orders"}}
	newGroup := func() *group {
		return &group{
			bal:    assign.New([][]string{{"views", "clicks"}, {"orders"}}, assign.Options{}), // any order
			topics: map[string]int32{"clicks": 4, "views": 4, "orders": 2},
		}
	}

	// A new group of two.
	g := newGroup()
	g.join("m1", -1, nil)
	g.join("m2", -1, nil)
	first := g.balance(t)
	if got := checkTasks(t, subs, first); got["m1"] != 3 || got["m2"] != 3 {
		t.Errorf("tasks per member %v, want 3 each", got)
	}

	// m3 joins. First round: m1 and m2 keep part of what they own and
	// give up the rest; nobody gets a partition someone still owns.
	g = newGroup()
	g.join("m1", 1, first["m1"])
	g.join("m2", 1, first["m2"])
	g.join("m3", -1, nil)
	second := g.balance(t)
	checkTasks(t, subs, second)
	for _, m := range []string{"m1", "m2"} {
		for topic, ps := range second[m] {
			for _, p := range ps {
				if !slices.Contains(first[m][topic], p) {
					t.Errorf("round 1: %s got %s/%d, which it did not own", m, topic, p)
				}
			}
		}
	}
	if n := len(second["m3"]); n != 0 {
		t.Errorf("round 1: m3 got %v while their owners still had them", second["m3"])
	}

	// Second round, after the revocations: m3 gets its share.
	g = newGroup()
	g.join("m1", 2, second["m1"])
	g.join("m2", 2, second["m2"])
	g.join("m3", 2, nil)
	third := g.balance(t)
	if got := checkTasks(t, subs, third); got["m1"] != 2 || got["m2"] != 2 || got["m3"] != 2 {
		t.Errorf("round 2: tasks per member %v, want 2 each", got)
	}
	for _, m := range []string{"m1", "m2"} {
		if !reflect.DeepEqual(third[m], second[m]) {
			t.Errorf("round 2: %s had %v, now %v; it should keep its tasks", m, second[m], third[m])
		}
	}
}

// When two members claim a task, the claim of the later generation wins:
// the other member missed a rebalance and its claim is stale.
func TestBalanceStaleClaim(t *testing.T) {
	g := &group{bal: assign.New([][]string{{"in"}}, assign.Options{}), topics: map[string]int32{"in": 2}}
	g.join("m1", 3, map[string][]int32{"in": {0, 1}}) // stale
	g.join("m2", 5, map[string][]int32{"in": {0}})
	plan := g.balance(t)
	if !slices.Contains(plan["m2"]["in"], 0) {
		t.Errorf("plan %v: m2 should keep in/0, its claim is the newer one", plan)
	}
	if slices.Contains(plan["m1"]["in"], 0) {
		t.Errorf("plan %v: m1 got in/0 on a stale claim", plan)
	}
}
