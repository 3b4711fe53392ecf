// Package assign is samsa's consumer-group balancer: it assigns whole
// tasks, not partitions. A task is partition p of a sub-topology, and all
// of its input partitions (partition p of each input topic) go to the same
// member, which is what co-partitioning needs. Assignments are sticky (a
// member keeps the tasks it owns when the group stays balanced) and
// cooperative (a member that keeps a task never stops processing it during
// a rebalance).
package assign

import (
	"cmp"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProtocolName is the group protocol name. Members of one job must agree on
// it; the version suffix changes if the metadata format does.
const ProtocolName = "samsa-tasks-v1"

// Balancer is a kgo.GroupBalancer that assigns tasks. It is safe for
// concurrent use.
type Balancer struct {
	subs [][]string // input topics of each sub-topology, sorted
}

// New returns a balancer for a job whose sub-topology i reads the topics
// subs[i].
func New(subs [][]string) *Balancer {
	b := &Balancer{subs: make([][]string, len(subs))}
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
// metadata with the partitions this member owns.
func (*Balancer) JoinGroupMetadata(interests []string, owned map[string][]int32, generation int32) []byte {
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
	return meta.AppendTo(nil)
}

// ParseSyncAssignment implements kgo.GroupBalancer.
func (*Balancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	return kgo.ParseConsumerSyncAssignment(assignment)
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

	assigned := Assign(len(members), tasks, func(t Task) (int, bool) {
		c, ok := owner[t]
		return c.member, ok
	})

	plan := cb.NewPlan()
	for i, ts := range assigned {
		for _, t := range ts {
			for _, topic := range b.subs[t.Sub] {
				if t.Partition < topics[topic] {
					plan.AddPartition(members[i], topic, t.Partition)
				}
			}
		}
	}
	plan.AdjustCooperative(cb)
	return plan
}

// Assign spreads tasks over n members: every member gets len(tasks)/n or
// one more, and a member keeps the tasks it owns (per owner) as far as that
// allows. The result is deterministic for the same input.
func Assign(n int, tasks []Task, owner func(Task) (int, bool)) [][]Task {
	out := make([][]Task, n)
	if n == 0 {
		return out
	}
	tasks = slices.Clone(tasks)
	slices.SortFunc(tasks, Task.compare)
	base, extra := len(tasks)/n, len(tasks)%n

	// Keep owned tasks, up to base+1 each, and base+1 for at most extra
	// members.
	kept := make([][]Task, n)
	for _, t := range tasks {
		if m, ok := owner(t); ok && m >= 0 && m < n && len(kept[m]) < base+1 {
			kept[m] = append(kept[m], t)
		}
	}
	full := 0
	for m := range kept {
		if len(kept[m]) == base+1 {
			if full < extra {
				full++
			} else {
				kept[m] = kept[m][:base]
			}
		}
	}
	taken := map[Task]bool{}
	for m := range kept {
		out[m] = kept[m]
		for _, t := range kept[m] {
			taken[t] = true
		}
	}

	// Hand out the rest, each to the least loaded member (the lowest index
	// on a tie). Since no member kept more than base+1 and at most extra
	// kept base+1, this ends with every member at base or base+1.
	for _, t := range tasks {
		if taken[t] {
			continue
		}
		best := 0
		for m := range out {
			if len(out[m]) < len(out[best]) {
				best = m
			}
		}
		out[best] = append(out[best], t)
	}
	for m := range out {
		slices.SortFunc(out[m], Task.compare)
	}
	return out
}
