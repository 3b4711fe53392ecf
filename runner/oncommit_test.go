package runner_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// With output caching, a count emits per commit, not per update: the
// output collapses to at most one record per key per commit, and the last
// record of each key is still its exact count.
func TestToStreamOnCommitCollapsesOutput(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	const n, keys = 5000, 7
	b.produce(seqRecords("in", 0, n, keys)...)

	job := stream.NewJob("oncommit")
	in := stream.Input(job, "in", serde.String, serde.String)
	counts := operators.Count(operators.GroupByKey(in, serde.String, serde.String), "counts")
	stream.Output(operators.ToStreamOnCommit(counts), "out", serde.String, serde.Int64)

	cfg := b.config()
	cfg.StateDir = t.TempDir()
	cfg.CommitInterval = time.Hour // one commit: the final one
	if err := runToEnd(t, job, cfg); err != nil {
		t.Fatal(err)
	}
	out := b.readAll("out")
	last := map[string]int64{}
	for _, r := range out {
		last[string(r.Key)] = int64(binary.BigEndian.Uint64(r.Value))
	}
	var total int64
	for _, c := range last {
		total += c
	}
	if len(last) != keys || total != n {
		t.Errorf("final counts %v: %d keys totalling %d, want %d keys totalling %d", last, len(last), total, keys, n)
	}
	if len(out) > 2*keys { // a commit at a rebalance may add one round
		t.Errorf("%d output records for %d keys: updates did not collapse", len(out), keys)
	}
}
