package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/stream"
)

type describeFlags struct {
	format  string
	offline bool
}

func (c *cli) describeFlagSet() (*flagSet, *adminFlags, *describeFlags) {
	f, a := c.adminFlagSet("describe")
	df := &describeFlags{}
	f.String(&df.format, "format", "text", "describe: output `format`: text, mermaid or dot; status: text or json")
	f.Bool(&df.offline, "offline", false, "describe: do not ask the brokers for partition counts")
	return f, a, df
}

// describeJob is the describe command: the topology as text, Mermaid or
// Graphviz DOT, with partition counts from the brokers when they can be
// reached (best effort: without them the description says nothing of
// partitions).
func (c *cli) describeJob(ctx context.Context, args []string) error {
	f, a, df := c.describeFlagSet()
	cfg, err := c.parseAdmin(f, a, args)
	if err != nil {
		return err
	}
	var render func(*description, io.Writer)
	switch df.format {
	case "text":
		render = (*description).text
	case "mermaid":
		render = (*description).mermaid
	case "dot":
		render = (*description).dot
	default:
		return usageError{fmt.Errorf("flag --format: %q is not one of text, mermaid, dot", df.format)}
	}
	topo, err := c.job.Build()
	if err != nil {
		return err
	}
	var partitions map[string]int32
	if !df.offline {
		if partitions, err = topicPartitions(ctx, cfg, topo); err != nil {
			fmt.Fprintf(c.stderr, "%s: describe: no partition counts (%v); --offline skips asking\n", topo.Name(), err)
		}
	}
	render(newDescription(topo, partitions), c.stdout)
	return nil
}

// topicPartitions asks the brokers for the partition counts of the job's
// topics. An internal topic not created yet gets the count the job will
// create it with.
func topicPartitions(ctx context.Context, cfg Config, topo *stream.Topology) (map[string]int32, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	jb, err := connectJob(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	defer jb.close()
	topics := append(topo.Inputs(), topo.Outputs()...)
	for _, it := range topo.Internal() {
		topics = append(topics, it.Name)
	}
	details, err := jb.adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list topics on %s: %w", jb.where, err)
	}
	partitions := map[string]int32{}
	for _, d := range details {
		if d.Err == nil {
			partitions[d.Topic] = int32(len(d.Partitions))
		} else if !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("topic %q on %s: %w", d.Topic, jb.where, d.Err)
		}
	}
	derived := map[string]int32{}
	for _, t := range topo.SourceTopics() {
		if n, ok := partitions[t]; ok {
			derived[t] = n
		}
	}
	engine.ResolveInternal(topo, derived)
	for _, it := range topo.Internal() {
		if _, ok := partitions[it.Name]; !ok && derived[it.Name] > 0 {
			partitions[it.Name] = derived[it.Name]
		}
	}
	return partitions, nil
}

// description renders a topology.
type description struct {
	topo       *stream.Topology
	partitions map[string]int32 // nil if unknown
	internal   map[string]stream.InternalTopic
}

func newDescription(topo *stream.Topology, partitions map[string]int32) *description {
	d := &description{topo: topo, partitions: partitions, internal: map[string]stream.InternalTopic{}}
	for _, it := range topo.Internal() {
		d.internal[it.Name] = it
	}
	return d
}

// topicNotes says what is known of a topic: its partition count (if the
// brokers were asked) and, for an internal topic, its kind.
func (d *description) topicNotes(topic string) []string {
	var notes []string
	if it, ok := d.internal[topic]; ok {
		if it.Repartition {
			notes = append(notes, "repartition")
		} else {
			notes = append(notes, "changelog")
		}
	}
	if d.partitions != nil {
		if n, ok := d.partitions[topic]; ok {
			notes = append(notes, plural(int(n), "partition"))
		} else {
			notes = append(notes, "missing")
		}
	}
	return notes
}

// topicText is topic with its notes in parentheses.
func (d *description) topicText(topic string) string {
	if notes := d.topicNotes(topic); len(notes) > 0 {
		return fmt.Sprintf("%s (%s)", topic, strings.Join(notes, ", "))
	}
	return topic
}

// topicLines is topic with its notes, one per line, lines joined by sep.
func (d *description) topicLines(topic, sep string) string {
	return strings.Join(append([]string{topic}, d.topicNotes(topic)...), sep)
}

// tasks returns the task count of sub-topology sub, or 0 if unknown.
func (d *description) tasks(sub *stream.Subtopology) int {
	var n int32
	for _, t := range sub.Inputs {
		n = max(n, d.partitions[t])
	}
	return int(n)
}

func (d *description) subLabel(sub *stream.Subtopology) string {
	if n := d.tasks(sub); n > 0 {
		return fmt.Sprintf("sub-topology %d: %s", sub.ID, plural(n, "task"))
	}
	return fmt.Sprintf("sub-topology %d", sub.ID)
}

func (d *description) storeText(name string) string {
	spec, _ := d.topo.Store(name)
	kind := "Pebble"
	if spec.InMemory {
		kind = "in memory"
	}
	if spec.Changelog != "" {
		return fmt.Sprintf("%s (%s; a table of input topic %s)", name, kind, spec.Changelog)
	}
	topic := d.topo.ChangelogTopic(name)
	if d.partitions != nil {
		if n, ok := d.partitions[topic]; ok {
			topic += ", " + plural(int(n), "partition")
		}
	}
	return fmt.Sprintf("%s (%s; changelog %s)", name, kind, topic)
}

func (d *description) text(w io.Writer) {
	var tasks int
	for _, sub := range d.topo.Subtopologies() {
		tasks += d.tasks(sub)
	}
	subs := "1 sub-topology"
	if n := len(d.topo.Subtopologies()); n != 1 {
		subs = fmt.Sprintf("%d sub-topologies", n)
	}
	fmt.Fprintf(w, "job %s: %s", d.topo.Name(), subs)
	if tasks > 0 {
		fmt.Fprintf(w, ", %s", plural(tasks, "task"))
	}
	fmt.Fprintln(w)
	for _, sub := range d.topo.Subtopologies() {
		fmt.Fprintf(w, "\n%s\n", d.subLabel(sub))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, t := range sub.Inputs {
			fmt.Fprintf(tw, "  reads\t%s\n", d.topicText(t))
		}
		for _, t := range sub.Outputs {
			fmt.Fprintf(tw, "  writes\t%s\n", d.topicText(t))
		}
		for _, s := range sub.Stores {
			fmt.Fprintf(tw, "  store\t%s\n", d.storeText(s.Name))
		}
		tw.Flush()
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, n := range sub.Nodes() {
			var what []string
			if len(n.Parents) > 0 {
				what = append(what, "<- "+strings.Join(n.Parents, ", "))
			}
			if len(n.Reads) > 0 {
				what = append(what, "reads "+strings.Join(n.Reads, ", "))
			}
			if len(n.Writes) > 0 {
				what = append(what, "writes "+strings.Join(n.Writes, ", "))
			}
			if len(n.Stores) > 0 {
				what = append(what, "uses "+strings.Join(n.Stores, ", "))
			}
			fmt.Fprintf(tw, "    %s\t%s\n", n.Name, strings.Join(what, "; "))
		}
		tw.Flush()
	}
	if globals := d.topo.GlobalTables(); len(globals) > 0 {
		fmt.Fprintln(w, "\nglobal tables (every instance reads their topics to the end at start, then follows them)")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, g := range globals {
			fmt.Fprintf(tw, "  store\t%s (Pebble; a table of topic %s)\n", g.Store, d.topicText(g.Topic))
		}
		tw.Flush()
	}
}

// graph is the topology as boxes and arrows, for the diagram formats:
// every topic, node and store gets an ID safe in both Mermaid and DOT.
type graph struct {
	d      *description
	topics []string          // in order of appearance
	ids    map[string]string // "topic:x", "node:x", "store:x" -> ID
	used   map[string]bool   // IDs given out
}

func (d *description) graph() *graph {
	g := &graph{d: d, ids: map[string]string{}, used: map[string]bool{}}
	for _, gt := range d.topo.GlobalTables() {
		g.topic(gt.Topic)
		g.id("store", gt.Store)
	}
	for _, sub := range d.topo.Subtopologies() {
		for _, n := range sub.Nodes() {
			g.id("node", n.Name)
			for _, t := range slices.Concat(n.Reads, n.Writes) {
				g.topic(t)
			}
			for _, s := range n.Stores {
				g.id("store", s)
				g.topic(d.topo.ChangelogTopic(s))
			}
		}
	}
	return g
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9_]`)

// id returns the ID of the topic, node or store name, readable and
// unique: the name with unsafe characters replaced, and a number where
// two names collide that way.
func (g *graph) id(kind, name string) string {
	key := kind + ":" + name
	if id, ok := g.ids[key]; ok {
		return id
	}
	base := kind[:1] + "_" + unsafeID.ReplaceAllString(name, "_")
	id := base
	for i := 2; g.used[id]; i++ {
		id = base + "_" + strconv.Itoa(i)
	}
	g.ids[key], g.used[id] = id, true
	return id
}

func (g *graph) topic(name string) {
	if _, ok := g.ids["topic:"+name]; !ok {
		g.id("topic", name)
		g.topics = append(g.topics, name)
	}
}

func (d *description) mermaid(w io.Writer) {
	g := d.graph()
	fmt.Fprintln(w, "flowchart LR")
	for _, t := range g.topics {
		fmt.Fprintf(w, "  %s[/\"%s\"/]\n", g.id("topic", t), mermaidText(d.topicLines(t, "<br/>")))
	}
	for _, sub := range d.topo.Subtopologies() {
		fmt.Fprintf(w, "  subgraph sub%d[\"%s\"]\n", sub.ID, mermaidText(d.subLabel(sub)))
		for _, n := range sub.Nodes() {
			fmt.Fprintf(w, "    %s[\"%s\"]\n", g.id("node", n.Name), mermaidText(n.Name))
		}
		for _, s := range sub.Stores {
			label := s.Name
			if s.InMemory {
				label += "<br/>in memory"
			}
			fmt.Fprintf(w, "    %s[(\"%s\")]\n", g.id("store", s.Name), mermaidText(label))
		}
		fmt.Fprintln(w, "  end")
	}
	for _, gt := range d.topo.GlobalTables() {
		fmt.Fprintf(w, "  %s[(\"%s\")]\n", g.id("store", gt.Store), mermaidText(gt.Store+"<br/>global table"))
		fmt.Fprintf(w, "  %s -.->|restores| %s\n", g.id("topic", gt.Topic), g.id("store", gt.Store))
	}
	for _, sub := range d.topo.Subtopologies() {
		for _, n := range sub.Nodes() {
			id := g.id("node", n.Name)
			for _, t := range n.Reads {
				fmt.Fprintf(w, "  %s --> %s\n", g.id("topic", t), id)
			}
			for _, p := range n.Parents {
				fmt.Fprintf(w, "  %s --> %s\n", g.id("node", p), id)
			}
			for _, t := range n.Writes {
				fmt.Fprintf(w, "  %s --> %s\n", id, g.id("topic", t))
			}
			for _, s := range n.Stores {
				fmt.Fprintf(w, "  %s <-.-> %s\n", id, g.id("store", s))
			}
		}
		for _, s := range sub.Stores {
			if s.Changelog != "" {
				fmt.Fprintf(w, "  %s -.->|restores| %s\n", g.id("topic", s.Changelog), g.id("store", s.Name))
			} else {
				fmt.Fprintf(w, "  %s -.->|changelog| %s\n", g.id("store", s.Name), g.id("topic", d.topo.ChangelogTopic(s.Name)))
			}
		}
	}
}

// mermaidText escapes a label for a double-quoted Mermaid string.
func mermaidText(s string) string { return strings.ReplaceAll(s, `"`, "#quot;") }

func (d *description) dot(w io.Writer) {
	g := d.graph()
	fmt.Fprintf(w, "digraph %s {\n", dotQuote(d.topo.Name()))
	fmt.Fprintln(w, "  rankdir=LR;")
	fmt.Fprintln(w, `  graph [fontname="Helvetica"];`)
	fmt.Fprintln(w, `  node [shape=box, fontname="Helvetica"];`)
	fmt.Fprintln(w, `  edge [fontname="Helvetica", fontsize=10];`)
	for _, t := range g.topics {
		fmt.Fprintf(w, "  %s [shape=parallelogram, label=%s];\n", g.id("topic", t), dotQuote(d.topicLines(t, "\n")))
	}
	for _, sub := range d.topo.Subtopologies() {
		fmt.Fprintf(w, "  subgraph cluster_%d {\n    label=%s;\n", sub.ID, dotQuote(d.subLabel(sub)))
		for _, n := range sub.Nodes() {
			fmt.Fprintf(w, "    %s [label=%s];\n", g.id("node", n.Name), dotQuote(n.Name))
		}
		for _, s := range sub.Stores {
			label := s.Name
			if s.InMemory {
				label += "\nin memory"
			}
			fmt.Fprintf(w, "    %s [shape=cylinder, label=%s];\n", g.id("store", s.Name), dotQuote(label))
		}
		fmt.Fprintln(w, "  }")
	}
	for _, gt := range d.topo.GlobalTables() {
		fmt.Fprintf(w, "  %s [shape=cylinder, label=%s];\n", g.id("store", gt.Store), dotQuote(gt.Store+"\nglobal table"))
		fmt.Fprintf(w, "  %s -> %s [style=dashed, label=\"restores\"];\n", g.id("topic", gt.Topic), g.id("store", gt.Store))
	}
	for _, sub := range d.topo.Subtopologies() {
		for _, n := range sub.Nodes() {
			id := g.id("node", n.Name)
			for _, t := range n.Reads {
				fmt.Fprintf(w, "  %s -> %s;\n", g.id("topic", t), id)
			}
			for _, p := range n.Parents {
				fmt.Fprintf(w, "  %s -> %s;\n", g.id("node", p), id)
			}
			for _, t := range n.Writes {
				fmt.Fprintf(w, "  %s -> %s;\n", id, g.id("topic", t))
			}
			for _, s := range n.Stores {
				fmt.Fprintf(w, "  %s -> %s [style=dashed, dir=both];\n", id, g.id("store", s))
			}
		}
		for _, s := range sub.Stores {
			if s.Changelog != "" {
				fmt.Fprintf(w, "  %s -> %s [style=dashed, label=\"restores\"];\n", g.id("topic", s.Changelog), g.id("store", s.Name))
			} else {
				fmt.Fprintf(w, "  %s -> %s [style=dashed, label=\"changelog\"];\n", g.id("store", s.Name), g.id("topic", d.topo.ChangelogTopic(s.Name)))
			}
		}
	}
	fmt.Fprintln(w, "}")
}

// dotQuote returns s as a DOT string: double-quoted, with quotes and
// backslashes escaped and newlines as DOT's \n.
func dotQuote(s string) string {
	s = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
	return `"` + s + `"`
}
