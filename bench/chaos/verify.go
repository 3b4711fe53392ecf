package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// result is what a run counted.
type result struct {
	cfg            config
	produced       int64 // input records the producer had acknowledged
	produceRetries int64 // records it wrote again after the client failed them
	inLog          int64 // input records the broker holds
	inputDups      int64 // input records held twice (the same record number)
	inputLost      int64 // acknowledged input records the broker does not hold
	out            int64 // output records
	kills          int
	brokerRestarts int
	added, stopped int
	rebalances     int   // assignments the group's leaders logged
	dups           int64 // outputs repeating a count of their key
	lost           int64 // counts of a key no output carries
	beyond         int64 // outputs counting past their key's input records
	keys           int   // distinct keys of the input
	stateWrong     int   // keys whose latest changelog record is not their input count
	lastOutWrong   int   // keys whose last output is not their input count
	verified       bool
	wall           time.Duration
	anomalies      []string
	workDir        string // kept: the logs, state and broker data
}

func (res *result) anomaly(format string, args ...any) {
	res.anomalies = append(res.anomalies, fmt.Sprintf(format, args...))
}

// verify reads the input, the output and the changelog, and checks the
// output and the state against the input the broker holds.
func (r *runState) verify(ctx context.Context, adm *kadm.Client) error {
	res := r.res
	want := map[string]int64{}
	seen := make([]uint8, res.produced)
	err := readTopic(ctx, r.broker.addr, adm, inputTopic, func(rec *kgo.Record) error {
		id, err := strconv.ParseInt(string(rec.Value), 10, 64)
		if err != nil || id < 0 || id >= res.produced {
			return fmt.Errorf("input %s/%d@%d: value %q is not a record number of this run", rec.Topic, rec.Partition, rec.Offset, rec.Value)
		}
		if seen[id] > 0 {
			res.inputDups++
		}
		seen[id] = min(seen[id]+1, 255)
		want[string(rec.Key)]++
		res.inLog++
		return nil
	})
	if err != nil {
		return err
	}
	for _, n := range seen {
		if n == 0 {
			res.inputLost++
		}
	}
	res.keys = len(want)

	counts := map[string][]uint32{} // per key, how many outputs carry each count
	last := map[string]int64{}
	err = readTopic(ctx, r.broker.addr, adm, outputTopic, func(rec *kgo.Record) error {
		if len(rec.Value) != 8 {
			return fmt.Errorf("output %s/%d@%d: value %x is not an 8-byte count", rec.Topic, rec.Partition, rec.Offset, rec.Value)
		}
		k, n := string(rec.Key), int64(binary.BigEndian.Uint64(rec.Value))
		res.out++
		last[k] = n
		if n < 1 || n > want[k] {
			res.beyond++
			return nil
		}
		c := counts[k]
		if c == nil {
			c = make([]uint32, want[k]+1)
			counts[k] = c
		}
		if c[n] > 0 {
			res.dups++
		}
		c[n]++
		return nil
	})
	if err != nil {
		return err
	}
	for k, w := range want {
		c := counts[k]
		for n := int64(1); n <= w; n++ {
			if c == nil || c[n] == 0 {
				res.lost++
			}
		}
	}

	latest := map[string]int64{}
	err = readTopic(ctx, r.broker.addr, adm, changelog, func(rec *kgo.Record) error {
		if rec.Value == nil {
			delete(latest, string(rec.Key))
			return nil
		}
		if len(rec.Value) != 8 {
			return fmt.Errorf("changelog %s/%d@%d: value %x is not an 8-byte count", rec.Topic, rec.Partition, rec.Offset, rec.Value)
		}
		latest[string(rec.Key)] = int64(binary.BigEndian.Uint64(rec.Value))
		return nil
	})
	if err != nil {
		return err
	}
	var wrongState, wrongOut []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if latest[k] != want[k] {
			wrongState = append(wrongState, fmt.Sprintf("%s: %d, want %d", k, latest[k], want[k]))
		}
		if last[k] != want[k] {
			wrongOut = append(wrongOut, fmt.Sprintf("%s: %d, want %d", k, last[k], want[k]))
		}
	}
	for k := range latest {
		if _, ok := want[k]; !ok {
			wrongState = append(wrongState, fmt.Sprintf("%s: %d, a key the input does not have", k, latest[k]))
		}
	}
	res.stateWrong, res.lastOutWrong = len(wrongState), len(wrongOut)
	res.verified = true

	if res.inputLost > 0 {
		res.anomaly("the broker lost %d input records it had acknowledged", res.inputLost)
	}
	if res.lost > 0 {
		res.anomaly("%d counts have no output: input lost", res.lost)
	}
	if res.beyond > 0 {
		res.anomaly("%d outputs count past their key's input records: input counted twice", res.beyond)
	}
	if res.dups > 0 && r.cfg.processing == exactlyOnce {
		res.anomaly("%d duplicate outputs under exactly-once", res.dups)
	}
	if len(wrongState) > 0 {
		res.anomaly("the changelog's latest value is wrong for %d keys; the first: %s", len(wrongState), strings.Join(wrongState[:min(5, len(wrongState))], "; "))
	}
	if len(wrongOut) > 0 {
		res.anomaly("the last output is wrong for %d keys; the first: %s", len(wrongOut), strings.Join(wrongOut[:min(5, len(wrongOut))], "; "))
	}
	return nil
}

// readTopic calls fn for every record of topic up to its read_committed
// end offsets, partition by partition in offset order; transaction
// markers are skipped.
func readTopic(ctx context.Context, addr string, adm *kadm.Client, topic string, fn func(*kgo.Record) error) error {
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("read %s: list end offsets: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("read %s: list start offsets: %w", topic, err)
	}
	parts := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, o.Partition); ok && s.Offset < o.Offset {
			parts[o.Partition] = kgo.NewOffset().At(s.Offset)
			left[o.Partition] = o.Offset
		}
	})
	if len(parts) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // markers take offsets too
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %d partitions not read to their ends: %w", topic, len(left), err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			ferr = fmt.Errorf("read %s/%d: %w", t, p, err)
		})
		if ferr != nil {
			return ferr
		}
		var rerr error
		fs.EachRecord(func(rec *kgo.Record) {
			end, ok := left[rec.Partition]
			if !ok || rec.Offset >= end || rerr != nil {
				return
			}
			if rec.Offset+1 >= end {
				delete(left, rec.Partition)
			}
			if !rec.Attrs.IsControl() {
				rerr = fn(rec)
			}
		})
		if rerr != nil {
			return rerr
		}
	}
	return nil
}

// print writes the figures of the run as a table, then its anomalies.
func (res *result) print(w io.Writer) {
	yesNo := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	row := func(name, value string) { fmt.Fprintf(w, "  %-34s %s\n", name, value) }
	fmt.Fprintf(w, "\nchaos: %s, seed %d\n", res.cfg.processing, res.cfg.seed)
	row("records in (produced, acknowledged)", fmt.Sprintf("%d", res.produced))
	if res.produceRetries > 0 {
		row("  written again after a failure", fmt.Sprintf("%d", res.produceRetries))
	}
	if res.verified {
		row("records in the input topic", fmt.Sprintf("%d (%d held twice, %d lost by the broker)", res.inLog, res.inputDups, res.inputLost))
		row("records out", fmt.Sprintf("%d", res.out))
	}
	row("instance kills (SIGKILL)", fmt.Sprintf("%d", res.kills))
	row("broker restarts (SIGKILL)", fmt.Sprintf("%d", res.brokerRestarts))
	row("rebalances", fmt.Sprintf("%d (%d instances added, %d stopped; the group's leaders assigned tasks %d times)", res.added+res.stopped, res.added, res.stopped, res.rebalances))
	if res.verified {
		row("duplicates", fmt.Sprintf("%d", res.dups))
		row("lost", fmt.Sprintf("%d", res.lost))
		if res.beyond > 0 {
			row("counted twice (outputs past the input)", fmt.Sprintf("%d", res.beyond))
		}
		row("final state correct", fmt.Sprintf("%s (%d keys; changelog wrong for %d, last output wrong for %d)",
			yesNo(res.stateWrong == 0 && res.lastOutWrong == 0), res.keys, res.stateWrong, res.lastOutWrong))
	}
	row("wall time", res.wall.Round(100*time.Millisecond).String())
	if !res.verified {
		fmt.Fprintln(w, "  (the run did not finish: nothing verified)")
	}
	for _, a := range res.anomalies {
		fmt.Fprintf(w, "  ANOMALY: %s\n", a)
	}
	if res.workDir != "" {
		fmt.Fprintf(w, "  work directory (logs, state, broker data): %s\n", res.workDir)
	}
	if res.verified && len(res.anomalies) == 0 {
		fmt.Fprintln(w, "  result: OK")
	}
}
