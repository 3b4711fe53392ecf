package assign_test

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/internal/assign"
)

// The group leader balances whatever metadata the members sent: that of
// a foreign or future client (raw bytes), or claims of partitions that do
// not exist, from any generation. It never panics, and it assigns only
// partitions that exist, none twice. (Claims that split a task between
// members, which samsa members never make, may leave the task split for
// the one cooperative round in which its partitions are revoked.)
func FuzzBalanceMetadata(f *testing.F) {
	bal := assign.New([][]string{{"clicks", "views"}, {"orders"}}, assign.Options{Standbys: 1, Stateful: func(sub int) bool { return sub == 0 }})
	valid := bal.JoinGroupMetadata([]string{"clicks", "orders", "views"}, map[string][]int32{"clicks": {0, 1}, "views": {0, 1}}, 4)
	f.Add(valid, "orders", int32(1), int32(3), int32(5))
	f.Add([]byte{0, 3, 0, 0, 0, 1}, "views", int32(-1), int32(1<<30), int32(-1))
	f.Add([]byte{}, "nope", int32(0), int32(0), int32(0))
	// Valid consumer metadata whose user data is not samsa's, or is
	// samsa's with counts and tasks that make no sense.
	for _, userData := range [][]byte{
		{0, 1, 0x7f, 0xff, 0xff, 0xff},
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0},
		{0, 0, 0, 2, 0, 6, 't', 'o', 'p', 'i', 'c', 's'},
	} {
		meta := kmsg.NewConsumerMemberMetadata()
		meta.Version = 3
		meta.Topics = []string{"clicks", "views"}
		meta.UserData = userData
		f.Add(meta.AppendTo(nil), "clicks", int32(0), int32(2), int32(2))
	}
	f.Fuzz(func(t *testing.T, raw []byte, topic string, p1, p2, gen int32) {
		g := &group{bal: bal, topics: map[string]int32{"clicks": 3, "views": 3, "orders": 2}}
		g.members = append(g.members, kmsg.JoinGroupResponseMember{MemberID: "foreign", ProtocolMetadata: raw})
		g.join("claims", gen, map[string][]int32{topic: {p1, p2}, "views": {p2}})
		g.join("fresh", -1, nil)

		mb, interests, err := bal.MemberBalancer(g.members)
		if err != nil {
			return // kgo refuses metadata it cannot read
		}
		topics := map[string]int32{}
		for tp := range interests {
			topics[tp] = g.topics[tp] // unknown topics: no partitions
		}
		plan, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(topics)
		if err != nil {
			return
		}
		out := map[string]map[string][]int32{}
		for _, a := range plan.IntoSyncAssignment() {
			parts, tasks, err := bal.ParseAssignment(a.MemberAssignment)
			if err != nil {
				t.Fatalf("member %s cannot parse its assignment: %v", a.MemberID, err)
			}
			for _, s := range tasks.Standby {
				if slices.Contains(tasks.Active, s) || slices.Contains(tasks.Incoming, s) {
					t.Fatalf("member %s has task %v standby and active: %+v", a.MemberID, s, tasks)
				}
			}
			for tp, ps := range parts {
				for _, p := range ps {
					if p < 0 || p >= g.topics[tp] {
						t.Fatalf("member %s got %s/%d, which does not exist", a.MemberID, tp, p)
					}
				}
			}
			out[a.MemberID] = parts
		}
		for tp, ps := range owners(out) {
			for p, ms := range ps {
				if len(ms) > 1 {
					t.Fatalf("%s/%d assigned to %v", tp, p, ms)
				}
			}
		}
	})
}
