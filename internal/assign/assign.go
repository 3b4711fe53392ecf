// Package assign is samsa's consumer-group balancer: it assigns whole
// tasks, not partitions. A task is partition p of a sub-topology, and all
// of its input partitions (partition p of each input topic) go to the same
// member, which is what co-partitioning needs. Assignments are sticky (a
// member keeps the tasks it owns when the group stays balanced) and
// cooperative (a member that keeps a task never stops processing it during
// a rebalance).
//
// # Warm stores and standby replicas
//
// Each member reports in its join metadata the changelog offsets of the
// task stores it holds on local disk (Options.Local). A task that has to
// move, or has no owner, goes to the member with room whose copy of its
// stores is the most caught up, which then restores only the tail of the
// changelog it lacks (see AssignWarm). With Options.Standbys the leader
// also names, per stateful task, members other than its owner that keep
// a copy warm; each member learns its standby tasks from its
// assignment's user data (Options.OnAssigned), with the tasks it is to
// get in the next cooperative round, whose copies it keeps warm meanwhile.
package assign

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProtocolName is the group protocol name. Members of one job must agree on
// it; the version suffix changes if the metadata format does.
const ProtocolName = "samsa-tasks-v1"

// Options tune a Balancer. The zero value assigns active tasks only,
// sticky, with no preference for warm stores.
type Options struct {
	// Standbys is how many standby replicas of each stateful task the
	// leader assigns: members other than the task's active owner that
	// keep a copy of its stores up to date, at most one per member. With
	// fewer members than Standbys+1, each task gets as many as there are
	// other members. Default: 0.
	Standbys int
	// Stateful reports whether the tasks of sub-topology sub have local
	// stores worth a standby replica. Nil: none has.
	Stateful func(sub int) bool
	// Local returns what this member holds on local disk: for each task
	// whose stores are there, the sum of the changelog offsets they
	// reflect. JoinGroupMetadata reports it, and the leader prefers the
	// member whose copy is closest to the most advanced one reported when
	// a task has to move. It is called on every join and must be safe for
	// concurrent use. Nil: nothing is reported.
	Local func() map[Task]int64
	// OnAssigned is called with each assignment this member receives,
	// when ParseSyncAssignment parses it: from the client's group
	// goroutine, before its partitions are assigned or revoked.
	OnAssigned func(Assignment)
	// Log, if set, receives one line per balance the leader does: how
	// many tasks moved, how many of those went to a member with a warm
	// copy, and how many standbys were assigned.
	Log func(msg string, keyvals ...any)
}

// Balancer is a kgo.GroupBalancer that assigns tasks. It is safe for
// concurrent use.
type Balancer struct {
	subs [][]string // input topics of each sub-topology, sorted
	opts Options

	mu       sync.Mutex
	incoming []Task // what this member's last assignment said it gets next
}

// New returns a balancer for a job whose sub-topology i reads the topics
// subs[i].
func New(subs [][]string, opts Options) *Balancer {
	b := &Balancer{subs: make([][]string, len(subs)), opts: opts}
	for i, s := range subs {
		b.subs[i] = slices.Sorted(slices.Values(s))
	}
	return b
}

var _ kgo.GroupBalancer = (*Balancer)(nil)

// ProtocolName implements kgo.GroupBalancer.
func (*Balancer) ProtocolName() string { return ProtocolName }

// IsCooperative implements kgo.GroupBalancer.
func (*Balancer) IsCooperative() bool { return true }

// JoinGroupMetadata implements kgo.GroupBalancer: the standard consumer
// metadata with the partitions this member owns and, as user data, the
// changelog offsets of the task stores it holds (see Options.Local) and
// the tasks its last assignment said it gets next (Assignment.Incoming).
// The leader counts those as this member's while nobody owns them: the
// second round of a cooperative move then completes the move the first
// one began, rather than placing the tasks afresh.
func (b *Balancer) JoinGroupMetadata(interests []string, owned map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	for _, topic := range slices.Sorted(maps.Keys(owned)) {
		op := kmsg.NewConsumerMemberMetadataOwnedPartition()
		op.Topic = topic
		op.Partitions = owned[topic]
		meta.OwnedPartitions = append(meta.OwnedPartitions, op)
	}
	var d memberData
	if b.opts.Local != nil {
		d.local = b.opts.Local()
	}
	b.mu.Lock()
	d.incoming = b.incoming
	b.mu.Unlock()
	meta.UserData = encodeMemberData(d)
	return meta.AppendTo(nil)
}

// Assignment is what a member was assigned, in tasks.
type Assignment struct {
	// Active are the tasks whose partitions the member consumes.
	Active []Task
	// Standby are the tasks the member keeps standby copies of.
	Standby []Task
	// Incoming are the tasks the member gets in the next cooperative
	// round, once their current owners have given them up.
	Incoming []Task
}

// ParseSyncAssignment implements kgo.GroupBalancer. It hands the
// assignment, in tasks, to Options.OnAssigned.
func (b *Balancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	parts, a, err := b.ParseAssignment(assignment)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.incoming = a.Incoming
	b.mu.Unlock()
	if b.opts.OnAssigned != nil {
		b.opts.OnAssigned(a)
	}
	return parts, nil
}

// ParseUserData returns the standby and incoming tasks named in the user
// data of an assignment this balancer made (as tools that describe the
// group find it in kmsg.ConsumerMemberAssignment.UserData).
func ParseUserData(userData []byte) (standby, incoming []Task) {
	return decodeAssignmentData(userData)
}

// ParseAssignment parses a member's assignment: its partitions, and what
// they and the assignment's user data mean in tasks.
func (b *Balancer) ParseAssignment(assignment []byte) (map[string][]int32, Assignment, error) {
	var ca kmsg.ConsumerMemberAssignment
	if err := ca.ReadFrom(assignment); err != nil {
		return nil, Assignment{}, fmt.Errorf("sync assignment parse failed: %v", err)
	}
	parts := make(map[string][]int32, len(ca.Topics))
	var a Assignment
	for _, t := range ca.Topics {
		parts[t.Topic] = t.Partitions
		for s, topics := range b.subs {
			if slices.Contains(topics, t.Topic) {
				for _, p := range t.Partitions {
					a.Active = append(a.Active, Task{s, p})
				}
			}
		}
	}
	slices.SortFunc(a.Active, Task.compare)
	a.Active = slices.CompactFunc(a.Active, func(x, y Task) bool { return x.compare(y) == 0 })
	a.Standby, a.Incoming = decodeAssignmentData(ca.UserData)
	return parts, a, nil
}

// MemberBalancer implements kgo.GroupBalancer.
func (b *Balancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	if err != nil {
		return nil, nil, err
	}
	return cb, cb.MemberTopics(), nil
}

// Task is one unit of assignment: partition Partition of sub-topology Sub.
type Task struct {
	Sub       int
	Partition int32
}

func (t Task) compare(o Task) int {
	// Partition first, so that each member's share mixes sub-topologies.
	return cmp.Or(cmp.Compare(t.Partition, o.Partition), cmp.Compare(t.Sub, o.Sub))
}

// Balance implements kgo.ConsumerBalancerBalance.
func (b *Balancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	var members []*kmsg.JoinGroupResponseMember
	var metas []*kmsg.ConsumerMemberMetadata
	cb.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		members = append(members, m)
		metas = append(metas, meta)
	})

	// The tasks that exist: one per partition of each sub-topology. If a
	// sub-topology's topics disagree on partition count the runner refuses
	// to start; here we assign the partitions that exist.
	var tasks []Task
	for s, ts := range b.subs {
		var n int32
		for _, t := range ts {
			n = max(n, topics[t])
		}
		for p := range n {
			tasks = append(tasks, Task{s, p})
		}
	}
	subOf := map[string]int{}
	for s, ts := range b.subs {
		for _, t := range ts {
			subOf[t] = s
		}
	}

	// Who owns each task now: the claim of the highest generation wins
	// (a member that missed rebalances may still claim stale partitions).
	type claim struct {
		member int
		gen    int32
	}
	owner := map[Task]claim{}
	for i, meta := range metas {
		for _, op := range meta.OwnedPartitions {
			s, ok := subOf[op.Topic]
			if !ok {
				continue
			}
			for _, p := range op.Partitions {
				t := Task{s, p}
				if c, ok := owner[t]; !ok || meta.Generation > c.gen {
					owner[t] = claim{i, meta.Generation}
				}
			}
		}
	}
	// A task nobody owns that a member was told it gets next is that
	// member's: it was given up for it in the first round of a
	// cooperative move. (Placed afresh, it could go back to the member
	// that gave it up, say for its warm copy, and be taken away again in
	// the next round, and so on.)
	data := make([]memberData, len(metas))
	for i, meta := range metas {
		data[i] = decodeMemberData(meta.UserData)
	}
	pending := map[Task]claim{}
	for i, meta := range metas {
		for _, t := range data[i].incoming {
			if _, owned := owner[t]; owned {
				continue
			}
			if c, ok := pending[t]; !ok || meta.Generation > c.gen {
				pending[t] = claim{i, meta.Generation}
			}
		}
	}
	maps.Copy(owner, pending)
	ownerOf := func(t Task) (int, bool) {
		c, ok := owner[t]
		return c.member, ok
	}
	lag := warmth(data)

	var stateful func(Task) bool
	if b.opts.Stateful != nil {
		stateful = func(t Task) bool { return b.opts.Stateful(t.Sub) }
	}
	assigned := AssignWarm(len(members), tasks, ownerOf, lag, stateful)
	var standbys [][]Task
	if b.opts.Standbys > 0 && stateful != nil {
		standbys = AssignStandbys(len(members), assigned, b.opts.Standbys, stateful, lag)
	}

	plan := cb.NewPlan()
	out := &syncPlan{plan: plan, standbys: map[string][]Task{}, incoming: map[string][]Task{}}
	var moved, warm, nStandbys int
	for i, ts := range assigned {
		for _, t := range ts {
			for _, topic := range b.subs[t.Sub] {
				if t.Partition < topics[topic] {
					plan.AddPartition(members[i], topic, t.Partition)
				}
			}
			if m, ok := ownerOf(t); !ok || m != i {
				moved++
				if _, ok := lag(i, t); ok {
					warm++
				}
			}
		}
		if i < len(standbys) && len(standbys[i]) > 0 {
			out.standbys[members[i].MemberID] = standbys[i]
			nStandbys += len(standbys[i])
		}
	}
	plan.AdjustCooperative(cb)
	// The tasks the cooperative adjustment held back: their members
	// get them next round, and keep their copies warm meanwhile.
	adjusted := plan.AsMemberIDMap()
	for i, ts := range assigned {
		id := members[i].MemberID
		for _, t := range ts {
			i := slices.IndexFunc(b.subs[t.Sub], func(topic string) bool { return t.Partition < topics[topic] })
			if i >= 0 && !slices.Contains(adjusted[id][b.subs[t.Sub][i]], t.Partition) {
				out.incoming[id] = append(out.incoming[id], t)
			}
		}
	}
	if b.opts.Log != nil {
		b.opts.Log("balanced the group's tasks", "members", len(members), "tasks", len(tasks),
			"placed", moved, "placed_warm", warm, "standbys", nStandbys)
	}
	return out
}

// warmth returns the lag of each member's local copy of each task's
// stores, from what the members reported in their metadata (see
// Options.Local): how many changelog records it is behind the most
// advanced copy reported for the task (the active owner's, usually). A
// member that reported no copy has none.
func warmth(data []memberData) Lag {
	reports := make([]map[Task]int64, len(data))
	best := map[Task]int64{}
	for i, d := range data {
		reports[i] = d.local
		for t, off := range reports[i] {
			best[t] = max(best[t], off)
		}
	}
	return func(m int, t Task) (int64, bool) {
		if m < 0 || m >= len(reports) {
			return 0, false
		}
		off, ok := reports[m][t]
		return best[t] - off, ok
	}
}

// syncPlan is a balance plan with each member's standby and incoming
// tasks in its assignment's user data.
type syncPlan struct {
	plan               *kgo.BalancePlan
	standbys, incoming map[string][]Task // by member ID
}

// IntoSyncAssignment implements kgo.IntoSyncAssignment.
func (p *syncPlan) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment {
	out := p.plan.IntoSyncAssignment()
	for i := range out {
		id := out[i].MemberID
		data := encodeAssignmentData(p.standbys[id], p.incoming[id])
		if data == nil {
			continue
		}
		var a kmsg.ConsumerMemberAssignment
		if err := a.ReadFrom(out[i].MemberAssignment); err != nil {
			continue // cannot happen: kgo encoded it
		}
		a.UserData = data
		out[i].MemberAssignment = a.AppendTo(nil)
	}
	return out
}

func (p *syncPlan) String() string { return p.plan.String() }

// Lag reports how many changelog records member m's local copy of task
// t's stores is behind, and false if m holds no copy.
type Lag func(m int, t Task) (int64, bool)

// Assign spreads tasks over n members: every member gets len(tasks)/n or
// one more, and a member keeps the tasks it owns (per owner) as far as that
// allows. The result is deterministic for the same input.
func Assign(n int, tasks []Task, owner func(Task) (int, bool)) [][]Task {
	return AssignWarm(n, tasks, owner, nil, nil)
}

// AssignWarm is Assign for tasks with state. It spreads tasks over n
// members, each getting len(tasks)/n or one more, in two passes, as Kafka
// Streams does: first the stateful tasks, spread evenly among themselves
// (each member gets its share of the restoring and of the disk), then the
// stateless ones, which move at no cost, to even out the totals. In each
// pass:
//
//  1. a member keeps the tasks it owns, as far as balance allows; one
//     that owns more than its share gives up first the tasks that a
//     member able to take more holds the warmest copy of;
//  2. each other task goes to the member with the lowest lag (lag nil:
//     none is warm) among those with room, then to the least loaded, then
//     to the lowest index. Tasks with a warm copy somewhere are placed
//     first, most caught-up copy first, so that room goes to them before
//     cold tasks fill it. A stateful task whose owner left, whose
//     warmest copy is on a member without room (more than acceptableLag
//     records ahead of the copies of members with room), goes to that
//     member beyond its share of stateful tasks, if its total stays
//     within balance: that member then gets fewer stateless tasks.
//
// stateful nil means every task is. This is Kafka Streams'
// high-availability assignment without its warm-up phase: a task that
// must move to balance the group moves at once, to the warmest member
// with room, rather than staying put until a warm-up replica has caught
// up. Standby replicas (AssignStandbys) are what keeps copies warm. The
// result is deterministic for the same input.
func AssignWarm(n int, tasks []Task, owner func(Task) (int, bool), lag Lag, stateful func(Task) bool) [][]Task {
	out := make([][]Task, n)
	if n == 0 {
		return out
	}
	if lag == nil {
		lag = func(int, Task) (int64, bool) { return 0, false }
	}
	tasks = slices.Clone(tasks)
	slices.SortFunc(tasks, Task.compare)
	var withState, stateless []Task
	for _, t := range tasks {
		if stateful == nil || stateful(t) {
			withState = append(withState, t)
		} else {
			stateless = append(stateless, t)
		}
	}
	place(out, withState, owner, lag, len(withState)/n, len(withState)%n, len(tasks)/n)
	// Each member holds at most max(len(withState)/n+1, len(tasks)/n)
	// tasks now, and no more than len(tasks)%n members hold len(tasks)/n+1:
	// the totals can even out.
	place(out, stateless, owner, func(int, Task) (int64, bool) { return 0, false }, len(tasks)/n, len(tasks)%n, 0)
	for m := range out {
		slices.SortFunc(out[m], Task.compare)
	}
	return out
}

// acceptableLag is how far behind the warmest copy of a task's stores
// another copy may be and still count as warm as it: a task whose owner
// left goes beyond its member's share only to a copy warmer than that.
// (Kafka Streams' acceptable.recovery.lag, in changelog records.)
const acceptableLag = 1000

// place adds tasks to out so that every member ends with base or base+1
// tasks, at most extra of them base+1, counting what out holds already
// (no member holds more than base+1, nor more than extra base+1). See
// AssignWarm for the rules. The one exception: a task with no owner (it
// left) whose warmest copy is on a member without room, more than
// acceptableLag records ahead of any copy on a member with room, goes to
// that member if it holds fewer than soft tasks; it then holds more than
// its share of this pass's tasks, and the next pass gives it fewer.
func place(out [][]Task, tasks []Task, owner func(Task) (int, bool), lag Lag, base, extra, soft int) {
	n := len(out)
	full := 0
	for m := range out {
		if len(out[m]) >= base+1 {
			full++
		}
	}
	owned := make([][]Task, n)
	for _, t := range tasks {
		if m, ok := owner(t); ok && m >= 0 && m < n {
			owned[m] = append(owned[m], t)
		}
	}
	// The members that may take more tasks than they own.
	var receivers []int
	for m := range owned {
		if len(out[m])+len(owned[m]) < base+1 {
			receivers = append(receivers, m)
		}
	}
	// alt is the lag of the warmest copy of t held by a receiver other
	// than m; false if none holds one.
	alt := func(m int, t Task) (int64, bool) {
		var best int64
		found := false
		for _, r := range receivers {
			if l, ok := lag(r, t); ok && r != m && (!found || l < best) {
				best, found = l, true
			}
		}
		return best, found
	}

	// Keep owned tasks, up to base+1 in all, and base+1 for at most extra
	// members. An owner over its share keeps first the tasks no receiver
	// is warm for, then those whose warmest receiver lags most.
	taken := map[Task]bool{}
	for m, ts := range owned {
		room := max(0, base+1-len(out[m]))
		if len(ts) > room-1 {
			slices.SortStableFunc(ts, func(a, b Task) int {
				la, oka := alt(m, a)
				lb, okb := alt(m, b)
				switch {
				case oka != okb:
					if oka {
						return 1 // a has somewhere warm to go: give it up first
					}
					return -1
				case oka && la != lb:
					return cmp.Compare(lb, la)
				}
				return a.compare(b)
			})
		}
		kept := ts[:min(len(ts), room)]
		if len(kept) > 0 && len(out[m])+len(kept) == base+1 {
			if full < extra {
				full++
			} else {
				kept = kept[:len(kept)-1]
			}
		}
		out[m] = append(out[m], kept...)
		for _, t := range kept {
			taken[t] = true
		}
	}

	// Hand out the rest. A member has room below base tasks, or at base
	// while fewer than extra members have base+1; every task finds room,
	// and every member ends at base or base+1.
	type warmest struct {
		lag  int64
		warm bool
	}
	var rest []Task
	coldest := map[Task]warmest{}
	for _, t := range tasks {
		if taken[t] {
			continue
		}
		rest = append(rest, t)
		var w warmest
		for m := range n {
			if l, ok := lag(m, t); ok && (!w.warm || l < w.lag) {
				w = warmest{l, true}
			}
		}
		coldest[t] = w
	}
	slices.SortStableFunc(rest, func(a, b Task) int {
		wa, wb := coldest[a], coldest[b]
		switch {
		case wa.warm != wb.warm:
			if wa.warm {
				return -1
			}
			return 1
		case wa.warm && wa.lag != wb.lag:
			return cmp.Compare(wa.lag, wb.lag)
		}
		return a.compare(b)
	})
	room := func(m int) bool { return len(out[m]) < base || len(out[m]) == base && full < extra }
	for _, t := range rest {
		best := -1
		var bestLag int64
		var bestWarm bool
		for m := range n {
			if !room(m) {
				continue
			}
			l, warm := lag(m, t)
			better := best < 0
			if !better {
				switch {
				case warm != bestWarm:
					better = warm
				case warm && l != bestLag:
					better = l < bestLag
				default:
					better = len(out[m]) < len(out[best])
				}
			}
			if better {
				best, bestLag, bestWarm = m, l, warm
			}
		}
		if o, ok := owner(t); !ok || o < 0 || o >= n {
			// A task whose owner left goes beyond the share to a copy
			// much warmer than any member with room holds, if its
			// member has fewer than soft tasks. (A task given up for
			// balance moves on: otherwise its owner would keep it.)
			warmest, wl := -1, int64(0)
			for m := range n {
				if l, warm := lag(m, t); warm && len(out[m]) < soft && !room(m) && (warmest < 0 || l < wl) {
					warmest, wl = m, l
				}
			}
			if warmest >= 0 && (!bestWarm || bestLag > wl+acceptableLag) {
				out[warmest] = append(out[warmest], t)
				continue
			}
		}
		if best < 0 {
			panic("assign: no member has room for a task") // the counts above make this impossible
		}
		out[best] = append(out[best], t)
		if len(out[best]) == base+1 {
			full++
		}
	}
}

// AssignStandbys places min(replicas, n-1) standby replicas of each task
// of active (each member's active tasks, as AssignWarm returns them) for
// which stateful is true: never on the task's active member, never two on
// one member. A member's load is the stateful tasks it holds, active or
// standby: what it keeps on disk and up to date. Each replica goes, among
// the members below an even share of that load (all members if none is),
// to the one with the lowest lag for the task (a member keeping a copy
// warm already keeps doing so), then the one holding the fewest standbys
// of tasks active on the same member (so that when a member fails, its
// tasks spread over their standbys' members, each with room for them),
// then the least loaded, then the lowest index. The result is
// deterministic for the same input.
func AssignStandbys(n int, active [][]Task, replicas int, stateful func(Task) bool, lag Lag) [][]Task {
	out := make([][]Task, n)
	r := min(replicas, n-1)
	if r <= 0 {
		return out
	}
	if lag == nil {
		lag = func(int, Task) (int64, bool) { return 0, false }
	}
	activeOf := map[Task]int{}
	var tasks []Task
	for m, ts := range active {
		for _, t := range ts {
			activeOf[t] = m
			if stateful(t) {
				tasks = append(tasks, t)
			}
		}
	}
	slices.SortFunc(tasks, Task.compare)
	share := (len(tasks)*(r+1) + n - 1) / n
	load := make([]int, n)
	for _, t := range tasks {
		load[activeOf[t]]++
	}
	actives := slices.Clone(load)
	holds := make([]map[Task]bool, n)
	backs := make([]map[int]int, n) // member -> active member -> standbys of its tasks
	for m := range holds {
		holds[m] = map[Task]bool{}
		backs[m] = map[int]int{}
	}
	for _, t := range tasks {
		a := activeOf[t]
		for range r {
			best := -1
			var bestLag int64
			var bestWarm, bestUnder bool
			for m := range n {
				if m == a || holds[m][t] {
					continue
				}
				l, warm := lag(m, t)
				under := load[m] < share
				better := best < 0
				if !better {
					switch {
					case under != bestUnder:
						better = under
					case warm != bestWarm:
						better = warm
					case warm && l != bestLag:
						better = l < bestLag
					case backs[m][a] != backs[best][a]:
						better = backs[m][a] < backs[best][a]
					case actives[m] != actives[best]:
						better = actives[m] < actives[best]
					default:
						better = load[m] < load[best]
					}
				}
				if better {
					best, bestLag, bestWarm, bestUnder = m, l, warm, under
				}
			}
			if best < 0 {
				break // cannot happen with r ≤ n-1
			}
			load[best]++
			out[best] = append(out[best], t)
			holds[best][t] = true
			backs[best][a]++
		}
	}
	for m := range out {
		slices.SortFunc(out[m], Task.compare)
	}
	return out
}
