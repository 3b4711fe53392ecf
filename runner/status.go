package runner

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/samsa-go/samsa/internal/assign"
	"github.com/samsa-go/samsa/stream"
)

// jobStatus is what the status command reports: the job's consumer group
// as the brokers see it. Its JSON form is the output of --format json.
type jobStatus struct {
	Job        string            `json:"job"`
	Brokers    string            `json:"brokers"`
	State      string            `json:"state"` // the group's: Stable, Empty, PreparingRebalance, ...
	Members    []memberStatus    `json:"members"`
	Partitions []partitionStatus `json:"partitions"`
	Lag        int64             `json:"lag"` // the sum over the partitions with a known lag
}

type memberStatus struct {
	ID       string   `json:"id"`
	ClientID string   `json:"client_id"`
	Host     string   `json:"host"`
	Tasks    []string `json:"tasks"`
	Standby  []string `json:"standby,omitempty"` // standby tasks (--standby-replicas)
}

type partitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Task      string `json:"task"`
	Owner     string `json:"owner,omitempty"` // member ID
	Committed int64  `json:"committed"`       // -1: nothing committed
	End       int64  `json:"end"`             // the last stable offset: what a read_committed reader can reach
	Lag       int64  `json:"lag"`             // End - Committed, or End - start without a commit
	// CommittedAt is when the offset was committed, if the commit says
	// (commits of samsa jobs do).
	CommittedAt *time.Time `json:"committed_at,omitempty"`
}

func (c *cli) statusFlagSet() (*flagSet, *adminFlags, *string) {
	f, a := c.adminFlagSet("status")
	var format string
	f.String(&format, "format", "text", "describe: output `format`: text, mermaid or dot; status: text or json")
	return f, a, &format
}

// status is the status command.
func (c *cli) status(ctx context.Context, args []string) error {
	f, a, format := c.statusFlagSet()
	cfg, err := c.parseAdmin(f, a, args)
	if err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return usageError{fmt.Errorf("flag --format: %q is not one of text, json", *format)}
	}
	topo, err := c.job.Build()
	if err != nil {
		return err
	}
	jb, err := connectJob(ctx, cfg, true)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer jb.close()
	st, err := readStatus(ctx, jb, topo)
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	st.print(c.stdout, time.Now())
	return nil
}

// readStatus asks the brokers about the job's group, its commits and the
// ends of its input and repartition topics.
func readStatus(ctx context.Context, jb *jobBrokers, topo *stream.Topology) (*jobStatus, error) {
	group := topo.Name()
	st := &jobStatus{Job: group, Brokers: strings.Join(jb.cfg.Brokers, ","), State: "Dead"}
	described, err := jb.adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("status: describe group %q: %w", group, err)
	}
	owners := map[string]map[int32]string{} // topic -> partition -> member
	if g, ok := described[group]; ok {
		if g.Err != nil && !errors.Is(g.Err, kerr.GroupIDNotFound) {
			return nil, fmt.Errorf("status: describe group %q: %w", group, g.Err)
		}
		if g.Err == nil {
			st.State = g.State
		}
		for _, m := range g.Members {
			ms := memberStatus{ID: m.MemberID, ClientID: m.ClientID, Host: strings.TrimPrefix(m.ClientHost, "/"), Tasks: []string{}}
			if a, ok := m.Assigned.AsConsumer(); ok {
				tasks := map[string]bool{}
				for _, t := range a.Topics {
					sub, ok := topo.SubtopologyOf(t.Topic)
					for _, p := range t.Partitions {
						if owners[t.Topic] == nil {
							owners[t.Topic] = map[int32]string{}
						}
						owners[t.Topic][p] = m.MemberID
						if ok {
							tasks[stream.TaskID{Subtopology: sub.ID, Partition: p}.String()] = true
						}
					}
				}
				for id := range tasks {
					ms.Tasks = append(ms.Tasks, id)
				}
				slices.SortFunc(ms.Tasks, compareTaskStrings)
				standby, _ := assign.ParseUserData(a.UserData)
				for _, t := range standby {
					ms.Standby = append(ms.Standby, stream.TaskID{Subtopology: t.Sub, Partition: t.Partition}.String())
				}
			}
			st.Members = append(st.Members, ms)
		}
	}

	topics := topo.SourceTopics()
	starts, err := jb.adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("status: list offsets on %s: %w", jb.where, err)
	}
	var missing []string
	starts.Each(func(o kadm.ListedOffset) {
		if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, o.Topic)
		}
	})
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("status: topics %s do not exist on %s (has the job run there?)", strings.Join(missing, ", "), jb.where)
	}
	ends, err := listed(jb.adm.ListCommittedOffsets(ctx, topics...))
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("status: list offsets on %s: %w", jb.where, err)
	}
	committed, err := jb.adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("status: fetch the committed offsets of group %q: %w", group, err)
	}
	for _, t := range topics {
		sub, _ := topo.SubtopologyOf(t)
		ends.Each(func(end kadm.ListedOffset) {
			if end.Topic != t {
				return
			}
			ps := partitionStatus{
				Topic: t, Partition: end.Partition, End: end.Offset, Committed: -1,
				Task:  stream.TaskID{Subtopology: sub.ID, Partition: end.Partition}.String(),
				Owner: owners[t][end.Partition],
			}
			from := int64(0)
			if s, ok := starts.Lookup(t, end.Partition); ok {
				from = s.Offset
			}
			if o, ok := committed.Lookup(t, end.Partition); ok && o.Err == nil && o.At >= 0 {
				ps.Committed, from = o.At, o.At
				if cm, err := parseMeta(o.Metadata); err == nil && !cm.at.IsZero() {
					at := cm.at
					ps.CommittedAt = &at
				}
			}
			ps.Lag = max(0, ps.End-from)
			st.Lag += ps.Lag
			st.Partitions = append(st.Partitions, ps)
		})
	}
	slices.SortFunc(st.Partitions, func(a, b partitionStatus) int {
		return cmp.Or(compareTaskStrings(a.Task, b.Task), strings.Compare(a.Topic, b.Topic))
	})
	return st, nil
}

// compareTaskStrings orders task IDs "<sub>_<partition>" numerically.
func compareTaskStrings(a, b string) int {
	parse := func(s string) (int, int) {
		x, y, _ := strings.Cut(s, "_")
		i, _ := strconv.Atoi(x)
		j, _ := strconv.Atoi(y)
		return i, j
	}
	ai, aj := parse(a)
	bi, bj := parse(b)
	return cmp.Or(cmp.Compare(ai, bi), cmp.Compare(aj, bj))
}

func (st *jobStatus) print(w io.Writer, now time.Time) {
	fmt.Fprintf(w, "Job %s on %s: group %s, %s.\n", st.Job, st.Brokers, st.State, plural(len(st.Members), "member"))
	number := map[string]string{}
	if len(st.Members) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		standbys := slices.ContainsFunc(st.Members, func(m memberStatus) bool { return len(m.Standby) > 0 })
		header := "  #\tMEMBER\tCLIENT\tHOST\tTASKS"
		if standbys {
			header += "\tSTANDBY"
		}
		fmt.Fprintln(tw, header)
		for i, m := range st.Members {
			number[m.ID] = strconv.Itoa(i + 1)
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s", i+1, m.ID, m.ClientID, m.Host, strings.Join(m.Tasks, " "))
			if standbys {
				fmt.Fprintf(tw, "\t%s", strings.Join(m.Standby, " "))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	} else {
		fmt.Fprintln(w, "No instance is running.")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TASK\tTOPIC\tPARTITION\tOWNER\tCOMMITTED\tEND\tLAG\tLAST COMMIT")
	for _, p := range st.Partitions {
		owner, committed, age := "-", "-", "-"
		if n, ok := number[p.Owner]; ok {
			owner = "#" + n
		}
		if p.Committed >= 0 {
			committed = strconv.FormatInt(p.Committed, 10)
		}
		if p.CommittedAt != nil {
			age = roundAge(now.Sub(*p.CommittedAt)) + " ago"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\n", p.Task, p.Topic, p.Partition, owner, committed, p.End, p.Lag, age)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nTotal lag: %s.\n", plural(int(st.Lag), "record"))
}

// roundAge rounds a duration for people: 850ms, 12s, 3m10s, 5h02m, 3d4h.
func roundAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}
