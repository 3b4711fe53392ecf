package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/stream"
)

// Replay moves a stopped job's committed input offsets and, unless told to
// keep it, resets the job's state so that the next run computes as if the
// input began there.
//
// Resetting state must also reset local stores nobody here can reach: the
// state directory of another machine, or of an instance started later
// with a stale copy. The broker holds the mark. Before truncating a
// changelog partition, replay appends to it a record in a transaction it
// aborts (invisible to every read_committed reader, and so to restores),
// then deletes the records up to the abort marker. The changelog then
// starts past every offset a local store can reflect, and a task that
// opens a local store finds it behind the changelog's start: it wipes the
// store and restores from the (empty) changelog, whichever machine it
// runs on and whenever it starts. No commit protocol, at-least-once or
// exactly-once, needs to know about replays. Repartition topics are
// sealed and truncated the same way, their readers committed past the
// marker.

// replayTxnID is the transactional ID replay seals changelogs with.
func replayTxnID(job string) string { return "samsa-replay-" + job }

// topicSelection is the repeatable --topic flag: T or T:P.
type topicSelection []topicPart

type topicPart struct {
	topic     string
	partition int32 // -1: every partition
}

func (s *topicSelection) String() string {
	parts := make([]string, len(*s))
	for i, tp := range *s {
		parts[i] = tp.String()
	}
	return strings.Join(parts, ",")
}

func (tp topicPart) String() string {
	if tp.partition < 0 {
		return tp.topic
	}
	return fmt.Sprintf("%s:%d", tp.topic, tp.partition)
}

func (s *topicSelection) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		tp := topicPart{topic: item, partition: -1}
		if i := strings.LastIndexByte(item, ':'); i >= 0 {
			p, err := strconv.ParseInt(item[i+1:], 10, 32)
			if err != nil || p < 0 || i == 0 {
				return fmt.Errorf("%q: want TOPIC or TOPIC:PARTITION", item)
			}
			tp = topicPart{topic: item[:i], partition: int32(p)}
		}
		*s = append(*s, tp)
	}
	return nil
}

// replayFrom is where a replay starts, parsed from --from.
type replayFrom struct {
	kind   string // "earliest", "latest", "offset" or "time"
	offset int64
	at     time.Time
}

func parseFrom(s string) (replayFrom, error) {
	switch s {
	case "":
		return replayFrom{}, errors.New("flag --from: missing: give earliest, latest, an offset or an RFC 3339 time")
	case "earliest", "latest":
		return replayFrom{kind: s}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return replayFrom{}, fmt.Errorf("flag --from: offset %d: must not be negative", n)
		}
		return replayFrom{kind: "offset", offset: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return replayFrom{}, fmt.Errorf("flag --from: %q is not earliest, latest, an offset or an RFC 3339 time (such as 2024-05-01T12:00:00Z)", s)
	}
	return replayFrom{kind: "time", at: t}, nil
}

func (f replayFrom) String() string {
	switch f.kind {
	case "offset":
		return fmt.Sprintf("offset %d", f.offset)
	case "time":
		return f.at.Format(time.RFC3339Nano)
	}
	return f.kind
}

// replayPlan is what a replay changes.
type replayPlan struct {
	job       string
	from      replayFrom
	keepState bool
	moves     []offsetMove           // input partitions, by topic and partition
	truncs    []truncation           // internal partitions, by topic and partition
	resetSubs map[int]map[int32]bool // the tasks whose state is reset, by sub-topology
	tasks     map[int]int32          // task count by sub-topology
}

// offsetMove is one input partition's committed offset, before and after.
type offsetMove struct {
	topic      string
	partition  int32
	task       stream.TaskID
	committed  int64  // -1: none
	meta       string // the committed metadata
	to, end    int64
	note       string
	internal   bool // a repartition topic, moved to its end as it is truncated
	resetStore bool // the task's stores are reset
}

// truncation is one internal topic partition to empty.
type truncation struct {
	topic      string
	partition  int32
	task       stream.TaskID // whose store's changelog, or who reads the repartition topic
	start, end int64
	store      string // for a changelog; "" for a repartition topic
}

type replayFlags struct {
	from              string
	topics            topicSelection
	keepState, dryRun bool
}

func (c *cli) replayFlagSet() (*flagSet, *adminFlags, *replayFlags) {
	f, a := c.adminFlagSet("replay")
	rf := &replayFlags{}
	f.String(&rf.from, "from", "", "replay: where to start: earliest, latest, an `offset`, or an RFC 3339 time (the first record at or after it; a time past the end means the end)")
	f.Var(&rf.topics, "topic", "replay: only `topic` or topic:partition; repeatable, or comma-separated (default: every input topic)")
	f.Bool(&rf.keepState, "keep-state", false, "replay: keep the job's state and replay the input over it (default: reset the state, as if the input began at --from)")
	f.Bool(&rf.dryRun, "dry-run", false, "replay: print the plan and change nothing")
	return f, a, rf
}

// replay is the replay command.
func (c *cli) replay(ctx context.Context, args []string) error {
	f, a, rf := c.replayFlagSet()
	cfg, err := c.parseAdmin(f, a, args)
	if err != nil {
		return err
	}
	from, err := parseFrom(rf.from)
	if err != nil {
		return usageError{err}
	}
	topo, err := c.job.Build()
	if err != nil {
		return err
	}
	jb, err := connectJob(ctx, cfg, true)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer jb.close()

	if err := refuseIfRunning(ctx, jb, topo.Name()); err != nil {
		return err
	}
	plan, err := planReplay(ctx, jb, topo, from, rf.topics, rf.keepState)
	if err != nil {
		return err
	}
	plan.print(c.stdout)
	if rf.dryRun {
		fmt.Fprintln(c.stdout, "\nDry run: nothing changed.")
		return nil
	}
	if err := plan.apply(ctx, jb); err != nil {
		return err
	}
	var records int64
	for _, m := range plan.moves {
		if !m.internal {
			records += m.end - m.to
		}
	}
	fmt.Fprintf(c.stdout, "\nDone. The next run of %s processes %s from there.\n", topo.Name(), plural(int(records), "input record"))
	return nil
}

// refuseIfRunning returns an error naming the live members of the job's
// group, if it has any.
func refuseIfRunning(ctx context.Context, jb *jobBrokers, group string) error {
	members, err := liveMembers(ctx, jb.adm, group)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if len(members) > 0 {
		return fmt.Errorf("replay: job %s is running on %s: %s; stop every instance first",
			group, jb.where, strings.Join(members, ", "))
	}
	return nil
}

// planReplay works out what a replay changes, reading the brokers only.
func planReplay(ctx context.Context, jb *jobBrokers, topo *stream.Topology, from replayFrom, sel topicSelection, keepState bool) (*replayPlan, error) {
	adm := jb.adm
	// The group's inputs: a global table's topic is read to its end at
	// every start, whatever the replay.
	var inputs, globals []string
	for _, t := range topo.Inputs() {
		if _, ok := topo.SubtopologyOf(t); ok {
			inputs = append(inputs, t)
		} else {
			globals = append(globals, t)
		}
	}
	details, err := adm.ListTopics(ctx, inputs...)
	if err != nil {
		return nil, fmt.Errorf("replay: list topics on %s: %w", jb.where, err)
	}
	partitions := map[string]int32{}
	for _, t := range inputs {
		d, ok := details[t]
		if !ok || d.Err != nil {
			return nil, fmt.Errorf("replay: input topic %q does not exist on %s", t, jb.where)
		}
		partitions[t] = int32(len(d.Partitions))
	}

	// The input partitions to move.
	selected := map[string]map[int32]bool{}
	if len(sel) == 0 {
		for _, t := range inputs {
			sel = append(sel, topicPart{topic: t, partition: -1})
		}
	}
	for _, tp := range sel {
		n, ok := partitions[tp.topic]
		switch {
		case !ok && slices.Contains(globals, tp.topic):
			return nil, usageError{fmt.Errorf("flag --topic: %q is the topic of a global table, which every instance reads to its end at start: it has no offsets to move", tp.topic)}
		case !ok:
			return nil, usageError{fmt.Errorf("flag --topic: %q is not an input topic of job %s (its inputs: %s)", tp.topic, topo.Name(), strings.Join(inputs, ", "))}
		}
		if tp.partition >= n {
			return nil, usageError{fmt.Errorf("flag --topic: %s: topic %s has partitions 0 to %d", tp, tp.topic, n-1)}
		}
		if selected[tp.topic] == nil {
			selected[tp.topic] = map[int32]bool{}
		}
		for p := range n {
			if tp.partition < 0 || tp.partition == p {
				selected[tp.topic][p] = true
			}
		}
	}

	plan := &replayPlan{job: topo.Name(), from: from, keepState: keepState, tasks: map[int]int32{}}
	all := maps.Clone(partitions)
	resolveInternalPartitions(topo, all)
	for _, sub := range topo.Subtopologies() {
		plan.tasks[sub.ID] = all[sub.Inputs[0]]
	}
	if !keepState {
		if plan.resetSubs, err = resetScope(topo, selected, plan.tasks); err != nil {
			return nil, err
		}
	}

	// Where each selected partition goes.
	var topics []string
	for t := range selected {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	starts, err := listed(adm.ListStartOffsets(ctx, topics...))
	if err != nil {
		return nil, fmt.Errorf("replay: list start offsets: %w", err)
	}
	ends, err := listed(adm.ListEndOffsets(ctx, topics...))
	if err != nil {
		return nil, fmt.Errorf("replay: list end offsets: %w", err)
	}
	var targets kadm.ListedOffsets
	switch from.kind {
	case "earliest":
		targets = starts
	case "latest":
		targets = ends
	case "time":
		if targets, err = listed(adm.ListOffsetsAfterMilli(ctx, from.at.UnixMilli(), topics...)); err != nil {
			return nil, fmt.Errorf("replay: list offsets at %s: %w", from, err)
		}
	}
	committed, err := adm.FetchOffsets(ctx, topo.Name())
	if err == nil {
		err = committed.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		committed, err = nil, nil // never committed
	}
	if err != nil {
		return nil, fmt.Errorf("replay: fetch the committed offsets of group %q: %w", topo.Name(), err)
	}
	for _, t := range topics {
		sub, _ := topo.SubtopologyOf(t)
		for _, p := range slices.Sorted(maps.Keys(selected[t])) {
			start, _ := starts.Lookup(t, p)
			end, _ := ends.Lookup(t, p)
			m := offsetMove{topic: t, partition: p, task: stream.TaskID{Subtopology: sub.ID, Partition: p}, committed: -1, end: end.Offset}
			if o, ok := committed.Lookup(t, p); ok && o.At >= 0 {
				m.committed, m.meta = o.At, o.Metadata
			}
			switch from.kind {
			case "offset":
				m.to = min(max(from.offset, start.Offset), end.Offset)
				if m.to != from.offset {
					m.note = fmt.Sprintf("offset %d is outside %d-%d", from.offset, start.Offset, end.Offset)
				}
			default:
				to, _ := targets.Lookup(t, p)
				m.to = to.Offset
				if from.kind == "time" && to.Offset == end.Offset {
					m.note = "no record at or after the time: the end"
				}
			}
			m.resetStore = plan.resetSubs[sub.ID][p] && len(sub.Stores) > 0
			plan.moves = append(plan.moves, m)
		}
	}
	if err := plan.planInternal(ctx, jb, topo, committed); err != nil {
		return nil, err
	}
	return plan, nil
}

// listed is kadm's ListedOffsets with its per-partition errors as one.
func listed(l kadm.ListedOffsets, err error) (kadm.ListedOffsets, error) {
	if err == nil {
		err = l.Error()
	}
	return l, err
}

// resolveInternalPartitions adds the partition counts of the internal
// topics to partitions, as the runner creates them.
func resolveInternalPartitions(topo *stream.Topology, partitions map[string]int32) {
	for _, sub := range topo.Subtopologies() {
		var n int32
		for _, in := range sub.Inputs {
			n = max(n, partitions[in])
		}
		for _, it := range topo.Internal() {
			if it.Sub == sub.ID {
				partitions[it.Name] = n
			}
		}
	}
}

// resetScope returns, per sub-topology, the partitions (tasks) whose state
// a replay of the selected input partitions resets, or an error if such a
// reset cannot be made consistent:
//
//   - a task whose state is reset must replay every input topic it reads
//     (its state holds what each of them contributed);
//   - a sub-topology fed through a repartition topic combines records of
//     every partition of the one that writes it, so resetting any task
//     downstream needs every task upstream replayed; and a replay of
//     every task upstream resets every task downstream, whose repartition
//     input starts over.
//
// A sub-topology with no stores and no stateful sub-topology downstream
// has no state to keep consistent.
func resetScope(topo *stream.Topology, selected map[string]map[int32]bool, taskCount map[int]int32) (map[int]map[int32]bool, error) {
	subs := topo.Subtopologies()
	tasks := func(sub *stream.Subtopology) int32 { return taskCount[sub.ID] }
	repartition := map[string]bool{}
	writer := map[string]*stream.Subtopology{}
	for _, it := range topo.Internal() {
		if it.Repartition {
			repartition[it.Name] = true
			writer[it.Name] = subs[it.Sub]
		}
	}
	// stateful[i]: sub-topology i or one downstream of it has stores.
	stateful := make([]bool, len(subs))
	for i := len(subs) - 1; i >= 0; i-- {
		stateful[i] = len(subs[i].Stores) > 0
		for _, out := range subs[i].Outputs {
			if d, ok := topo.SubtopologyOf(out); ok && repartition[out] && stateful[d.ID] {
				stateful[i] = true
			}
		}
	}
	reset := map[int]map[int32]bool{}
	add := func(sub int, p int32) {
		if reset[sub] == nil {
			reset[sub] = map[int32]bool{}
		}
		reset[sub][p] = true
	}
	for topic, ps := range selected {
		sub, _ := topo.SubtopologyOf(topic)
		for p := range ps {
			add(sub.ID, p)
		}
	}
	var problems []string
	for _, sub := range subs { // upstream before downstream
		if len(reset[sub.ID]) == 0 {
			continue
		}
		full := int32(len(reset[sub.ID])) == tasks(sub)
		for _, out := range sub.Outputs {
			d, ok := topo.SubtopologyOf(out)
			if !ok || !repartition[out] {
				continue
			}
			switch {
			case full:
				for p := range tasks(d) {
					add(d.ID, p)
				}
			case stateful[d.ID]:
				problems = append(problems, fmt.Sprintf("sub-topology %d (%s) combines every partition of sub-topology %d through %s, but only some of them are replayed",
					d.ID, storesOf(topo, d), sub.ID, out))
			}
		}
	}
	for _, sub := range subs {
		ps := reset[sub.ID]
		if len(ps) == 0 || !stateful[sub.ID] {
			continue
		}
		for _, in := range sub.Inputs {
			if repartition[in] {
				if w := writer[in]; int32(len(reset[w.ID])) != tasks(w) {
					problems = append(problems, fmt.Sprintf("sub-topology %d (%s) also reads %s, which sub-topology %d writes: replay every input partition of that one too",
						sub.ID, storesOf(topo, sub), in, w.ID))
				}
				continue
			}
			var missing []string
			for _, p := range slices.Sorted(maps.Keys(ps)) {
				if !selected[in][p] {
					missing = append(missing, fmt.Sprintf("%s:%d", in, p))
				}
			}
			if len(missing) > 0 {
				problems = append(problems, fmt.Sprintf("sub-topology %d (%s) also reads %s: add --topic %s",
					sub.ID, storesOf(topo, sub), in, strings.Join(missing, " --topic ")))
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		problems = slices.Compact(problems)
		return nil, fmt.Errorf("replay: resetting the state of the selected partitions would leave it inconsistent: %s; or pass --keep-state to replay over the existing state",
			strings.Join(problems, "; "))
	}
	return reset, nil
}

// storesOf describes the state of a sub-topology for messages.
func storesOf(topo *stream.Topology, sub *stream.Subtopology) string {
	if len(sub.Stores) == 0 {
		return "feeding stores downstream"
	}
	names := make([]string, len(sub.Stores))
	for i, s := range sub.Stores {
		names[i] = s.Name
	}
	return "stores " + strings.Join(names, ", ")
}

// planInternal adds the internal topic partitions a state reset empties:
// the changelogs of the reset tasks' stores (a store that mirrors an input
// topic restores from that topic, which is never truncated), and the
// repartition topics read by reset tasks, whose committed offsets move to
// their new start.
func (plan *replayPlan) planInternal(ctx context.Context, jb *jobBrokers, topo *stream.Topology, committed kadm.OffsetResponses) error {
	if plan.keepState {
		return nil
	}
	type want struct {
		topic     string
		partition int32
		store     string
		task      stream.TaskID
	}
	var wants []want
	for _, it := range topo.Internal() {
		sub := topo.Subtopologies()[it.Sub]
		if it.Repartition {
			// Emptied when its writer replays in full; resetScope
			// then resets its reader in full too.
			reader, _ := topo.SubtopologyOf(it.Name)
			if int32(len(plan.resetSubs[sub.ID])) != plan.tasks[sub.ID] {
				continue
			}
			for p := range plan.resetSubs[reader.ID] {
				wants = append(wants, want{topic: it.Name, partition: p, task: stream.TaskID{Subtopology: reader.ID, Partition: p}})
			}
			continue
		}
		var store string
		for _, s := range sub.Stores {
			if topo.ChangelogTopic(s.Name) == it.Name {
				store = s.Name
			}
		}
		for p := range plan.resetSubs[sub.ID] {
			wants = append(wants, want{topic: it.Name, partition: p, store: store, task: stream.TaskID{Subtopology: sub.ID, Partition: p}})
		}
	}
	if len(wants) == 0 {
		return nil
	}
	var topics []string
	for _, w := range wants {
		topics = append(topics, w.topic)
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	details, err := jb.adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("replay: list internal topics: %w", err)
	}
	var exist []string
	for _, t := range topics {
		if d, ok := details[t]; ok && d.Err == nil {
			exist = append(exist, t)
		}
	}
	if len(exist) == 0 {
		return nil // the job never ran: nothing to reset
	}
	starts, err := listed(jb.adm.ListStartOffsets(ctx, exist...))
	if err != nil {
		return fmt.Errorf("replay: list start offsets of internal topics: %w", err)
	}
	ends, err := listed(jb.adm.ListEndOffsets(ctx, exist...))
	if err != nil {
		return fmt.Errorf("replay: list end offsets of internal topics: %w", err)
	}
	for _, w := range wants {
		start, ok1 := starts.Lookup(w.topic, w.partition)
		end, ok2 := ends.Lookup(w.topic, w.partition)
		if !ok1 || !ok2 {
			continue // not created yet
		}
		plan.truncs = append(plan.truncs, truncation{topic: w.topic, partition: w.partition, task: w.task, start: start.Offset, end: end.Offset, store: w.store})
		if w.store == "" {
			m := offsetMove{topic: w.topic, partition: w.partition, task: w.task, committed: -1, to: end.Offset, end: end.Offset, internal: true,
				resetStore: len(topo.Subtopologies()[w.task.Subtopology].Stores) > 0}
			if o, ok := committed.Lookup(w.topic, w.partition); ok && o.At >= 0 {
				m.committed, m.meta = o.At, o.Metadata
			}
			plan.moves = append(plan.moves, m)
		}
	}
	slices.SortFunc(plan.truncs, func(a, b truncation) int {
		return cmp.Or(strings.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	return nil
}

// print writes the plan: per partition, the committed offset before and
// after and the records to reprocess; the internal partitions emptied.
func (plan *replayPlan) print(w io.Writer) {
	state := "resetting state"
	if plan.keepState {
		state = "keeping state"
	}
	fmt.Fprintf(w, "Replay of job %s from %s, %s.\n\nInput offsets:\n", plan.job, plan.from, state)
	notes := slices.ContainsFunc(plan.moves, func(m offsetMove) bool { return m.note != "" })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "  TOPIC\tPARTITION\tTASK\tCOMMITTED\tNEW\tTO PROCESS")
	if notes {
		fmt.Fprint(tw, "\tNOTE")
	}
	fmt.Fprintln(tw)
	for _, m := range plan.moves {
		if m.internal {
			continue
		}
		committed := "-"
		if m.committed >= 0 {
			committed = strconv.FormatInt(m.committed, 10)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%d\t%d", m.topic, m.partition, m.task, committed, m.to, m.end-m.to)
		if notes {
			fmt.Fprintf(tw, "\t%s", m.note)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if plan.keepState {
		fmt.Fprintln(w, "\nState: kept; the replayed input is applied over it.")
		return
	}
	if len(plan.truncs) == 0 {
		fmt.Fprintln(w, "\nState: nothing to reset.")
		return
	}
	fmt.Fprintln(w, "\nState reset (internal topic partitions emptied):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TOPIC\tPARTITION\tOFFSETS DELETED\tWHAT")
	var tasks []string
	for _, t := range plan.truncs {
		what := "repartition topic: its reader starts over"
		if t.store != "" {
			what = "changelog of store " + t.store
			tasks = append(tasks, t.task.String())
		}
		deleted := "none"
		switch {
		case t.end == t.start+1:
			deleted = strconv.FormatInt(t.start, 10)
		case t.end > t.start:
			deleted = fmt.Sprintf("%d-%d", t.start, t.end-1)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", t.topic, t.partition, deleted, what)
	}
	tw.Flush()
	slices.Sort(tasks)
	tasks = slices.Compact(tasks)
	if len(tasks) > 0 {
		fmt.Fprintf(w, "\nLocal stores of tasks %s are wiped when the tasks next start, on any machine:\ntheir changelogs will begin past every offset a local store can hold.\n", strings.Join(tasks, ", "))
	}
}

// apply carries out the plan: seal the internal partitions, commit the
// new offsets, then truncate. The commit is the step the brokers refuse
// if an instance joined the group meanwhile, so a refusal changes
// nothing; a failure after it is repaired by running the same replay
// again.
func (plan *replayPlan) apply(ctx context.Context, jb *jobBrokers) error {
	sealed, err := plan.seal(ctx, jb)
	if err != nil {
		return err
	}
	// A reset task's stores reflect their changelogs from their new
	// start: commit metadata with the sealed ends.
	resetMeta := map[stream.TaskID]map[string]int64{}
	for _, t := range plan.truncs {
		if t.store != "" {
			if resetMeta[t.task] == nil {
				resetMeta[t.task] = map[string]int64{}
			}
			resetMeta[t.task][t.store] = sealed[t.topic][t.partition]
		}
	}
	offsets := kadm.Offsets{}
	for _, m := range plan.moves {
		meta, to := m.meta, m.to
		if m.internal {
			to = sealed[m.topic][m.partition] // past the seal
		}
		switch {
		case m.resetStore:
			meta = decodedMeta{offsets: resetMeta[m.task], at: time.Now()}.String()
		case meta != "":
			if cm, err := parseMeta(meta); err == nil {
				cm.at = time.Now()
				meta = cm.String()
			}
		}
		offsets.Add(kadm.Offset{Topic: m.topic, Partition: m.partition, At: to, LeaderEpoch: -1, Metadata: meta})
	}
	resps, err := jb.adm.CommitOffsets(ctx, plan.job, offsets)
	if err == nil {
		err = resps.Error()
	}
	switch {
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.RebalanceInProgress):
		if rerr := refuseIfRunning(ctx, jb, plan.job); rerr != nil {
			return rerr
		}
		return fmt.Errorf("replay: the group refused the new offsets (%w): is an instance of %s starting? Stop it; nothing was changed", err, plan.job)
	case err != nil:
		return fmt.Errorf("replay: commit the new offsets of group %q: %w; nothing was changed", plan.job, err)
	}

	// Delete up to the seal's abort marker, which stays: a partition
	// emptied entirely would forget its offsets across a restart of the
	// embedded broker (kfake reloads an empty partition at offset 0).
	del := kadm.Offsets{}
	for _, t := range plan.truncs {
		del.Add(kadm.Offset{Topic: t.topic, Partition: t.partition, At: sealed[t.topic][t.partition] - 1, LeaderEpoch: -1})
	}
	if len(del) > 0 {
		resps, err := jb.adm.DeleteRecords(ctx, del)
		if err == nil {
			for _, ps := range resps {
				for _, r := range ps {
					if r.Err != nil {
						err = errors.Join(err, fmt.Errorf("%s/%d: %w", r.Topic, r.Partition, r.Err))
					}
				}
			}
		}
		if err != nil {
			return fmt.Errorf("replay: the offsets moved, but truncating the internal topics failed: %w; run the same replay again to finish", err)
		}
	}
	// An instance that started between the commit and the truncation
	// restored state the truncation then removed under it.
	if err := refuseIfRunning(ctx, jb, plan.job); err != nil {
		return fmt.Errorf("%w (it started during the replay and may hold state from before it: stop it and run the same replay again)", err)
	}
	return nil
}

// sealWait bounds how long seal waits for the brokers to write the abort
// markers of its transaction, which they do after it ends.
const sealWait = 30 * time.Second

// seal appends a record in a transaction it aborts to each internal
// partition to truncate (a read_committed reader, as every samsa restore
// and task is, never sees it), waits until the abort markers are written,
// and returns the partitions' ends after them. The partitions are then
// truncated up to the marker: a changelog starts past every offset a
// local store can reflect, and a repartition topic's reader starts after
// the marker.
func (plan *replayPlan) seal(ctx context.Context, jb *jobBrokers) (map[string]map[int32]int64, error) {
	if len(plan.truncs) == 0 {
		return nil, nil
	}
	opts, err := kafkaConfig(jb.cfg, "samsa-replay").Opts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.TransactionalID(replayTxnID(plan.job)),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		return nil, fmt.Errorf("replay: begin the transaction that seals the internal topics: %w", err)
	}
	var topics []string
	var recs []*kgo.Record
	for _, t := range plan.truncs {
		topics = append(topics, t.topic)
		recs = append(recs, &kgo.Record{Topic: t.topic, Partition: t.partition, Key: []byte("samsa-replay")})
	}
	perr := cl.ProduceSync(ctx, recs...).FirstErr()
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil || perr != nil {
		return nil, fmt.Errorf("replay: seal the internal topics (the transactional ID %s needs write access): %w",
			replayTxnID(plan.job), errors.Join(perr, err))
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	deadline := time.Now().Add(sealWait)
	for {
		ends, err := listed(jb.adm.ListEndOffsets(ctx, topics...))
		if err != nil {
			return nil, fmt.Errorf("replay: list internal topic end offsets: %w", err)
		}
		stable, err := listed(jb.adm.ListCommittedOffsets(ctx, topics...))
		if err != nil {
			return nil, fmt.Errorf("replay: list internal topic end offsets: %w", err)
		}
		out := map[string]map[int32]int64{}
		var pending []string
		for _, t := range plan.truncs {
			e, _ := ends.Lookup(t.topic, t.partition)
			ls, _ := stable.Lookup(t.topic, t.partition)
			if ls.Offset < e.Offset || e.Offset < t.end+2 { // the record and its abort marker
				pending = append(pending, fmt.Sprintf("%s/%d", t.topic, t.partition))
			}
			if out[t.topic] == nil {
				out[t.topic] = map[int32]int64{}
			}
			out[t.topic][t.partition] = e.Offset
		}
		if len(pending) == 0 {
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("replay: the brokers did not complete the sealing transaction on %s within %s; nothing was changed, try again",
				strings.Join(pending, ", "), sealWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
