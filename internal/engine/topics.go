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
// topic of topo: a changelog has its sub-topology's count; a repartition
// topic has the largest count among the inputs of the sub-topology that
// writes it. Sub-topologies are resolved in order, which is the order of
// their dependencies: a sub-topology is created before one that reads
// what it writes.
func ResolveInternal(topo *stream.Topology, partitions map[string]int32) {
	internal := topo.Internal()
	for _, sub := range topo.Subtopologies() {
		var n int32
		for _, in := range sub.Inputs {
			n = max(n, partitions[in])
		}
		for _, it := range internal {
			if it.Sub == sub.ID {
				partitions[it.Name] = n
			}
		}
	}
}
