package engine

import (
	"fmt"
	"strings"

	"github.com/samsa-go/samsa/stream"
)

// CheckCopartitioned returns an error if the input topics of a
// sub-topology have different partition counts: partition p of each must
// go to the same task, so the counts must match.
func CheckCopartitioned(topo *stream.Topology, partitions map[string]int32) error {
	for _, sub := range topo.Subtopologies() {
		want := partitions[sub.Inputs[0]]
		for _, t := range sub.Inputs[1:] {
			if partitions[t] != want {
				counts := make([]string, len(sub.Inputs))
				for i, t := range sub.Inputs {
					counts[i] = fmt.Sprintf("%s=%d", t, partitions[t])
				}
				return fmt.Errorf("job %q: co-partitioned input topics have different partition counts (%s); topics read by one sub-topology need equal counts",
					topo.Name(), strings.Join(counts, ", "))
			}
		}
	}
	return nil
}

// ResolveInternal adds to partitions the partition count of each internal
// topic of topo. A sub-topology's count is that of its input topics that
// are not repartition topics, if it has any; otherwise that of the
// sub-topologies writing its repartition topics (the largest, if several).
// A repartition topic gets the count of the sub-topology that reads it, so
// that it is co-partitioned with whatever that sub-topology joins it with;
// a changelog gets the count of its store's sub-topology.
func ResolveInternal(topo *stream.Topology, partitions map[string]int32) {
	internal := map[string]stream.InternalTopic{}
	for _, it := range topo.Internal() {
		internal[it.Name] = it
	}
	subs := topo.Subtopologies()
	count := make([]int32, len(subs))
	// Counts flow from writers to readers: a pass per sub-topology at
	// most, whatever order their IDs have.
	for range subs {
		changed := false
		for _, sub := range subs {
			var external, written int32
			for _, in := range sub.Inputs {
				if it, ok := internal[in]; ok && it.Repartition {
					written = max(written, count[it.Sub])
				} else {
					external = max(external, partitions[in])
				}
			}
			n := external
			if n == 0 {
				n = written
			}
			if n != count[sub.ID] {
				count[sub.ID], changed = n, true
			}
		}
		if !changed {
			break
		}
	}
	for _, sub := range subs {
		for _, in := range sub.Inputs {
			if it, ok := internal[in]; ok && it.Repartition {
				partitions[in] = count[sub.ID]
			}
		}
	}
	for _, it := range internal {
		if !it.Repartition {
			partitions[it.Name] = count[it.Sub]
		}
	}
}
