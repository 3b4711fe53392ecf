package main

// The admin helpers of the toolbox: topics, groups, lag, and a line-based
// producer and consumer, for any Kafka-protocol brokers (the embedded one
// by default).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/connectors/embedded"
	"github.com/samsa-go/samsa/connectors/kafka"
	"github.com/samsa-go/samsa/stream"
)

const adminUsage = `
Admin helpers (any Kafka-protocol brokers; the embedded one at 127.0.0.1:9092 by default):
  samsa topics [list]                     topics with partitions, replicas and record counts
  samsa topics describe TOPIC...          partitions (offsets, leaders) and configuration
  samsa topics create TOPIC... [--partitions N] [--replication-factor R] [--config K=V]...
  samsa topics delete TOPIC...
  samsa groups [list]                     consumer groups with state and members
  samsa groups describe GROUP...          members, their partitions, committed offsets and lag
  samsa lag [GROUP...]                    lag per partition of groups (default: all)
  samsa produce TOPIC [--key-separator S] [--partition P]
                                          write each line of standard input as a record
                                          (key S value, if a separator is given)
  samsa consume TOPIC [--from-end] [--until-end] [--key-as F] [--value-as F] [--offsets]
                                          print records as key TAB value (read_committed);
                                          F: string (the default), int64 (8-byte big-endian), hex

Connection flags of the admin helpers:
  --brokers host:port,...  (env SAMSA_BROKERS); default 127.0.0.1:9092
  --tls, --tls-ca file, --tls-cert file, --tls-key file, --tls-server-name name,
  --tls-insecure-skip-verify  TLS to the brokers
  --sasl-mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512, --sasl-user user,
  --sasl-password-file file (or env SAMSA_SASL_PASSWORD)  SASL authentication
  --timeout duration       how long to wait for the brokers (env SAMSA_TIMEOUT); default 15s
`

// conn are the flags that say how to reach the brokers.
type conn struct {
	brokers      string
	tls          kafka.TLS
	sasl         kafka.SASL
	saslPassFile string
	timeout      time.Duration
}

func (c *conn) register(fs *flag.FlagSet) {
	fs.StringVar(&c.brokers, "brokers", envOr("SAMSA_BROKERS", embedded.DefaultListen), "")
	fs.BoolVar(&c.tls.Enable, "tls", false, "")
	fs.StringVar(&c.tls.CAFile, "tls-ca", "", "")
	fs.StringVar(&c.tls.CertFile, "tls-cert", "", "")
	fs.StringVar(&c.tls.KeyFile, "tls-key", "", "")
	fs.StringVar(&c.tls.ServerName, "tls-server-name", "", "")
	fs.BoolVar(&c.tls.InsecureSkipVerify, "tls-insecure-skip-verify", false, "")
	fs.StringVar(&c.sasl.Mechanism, "sasl-mechanism", os.Getenv("SAMSA_SASL_MECHANISM"), "")
	fs.StringVar(&c.sasl.User, "sasl-user", os.Getenv("SAMSA_SASL_USER"), "")
	fs.StringVar(&c.saslPassFile, "sasl-password-file", "", "")
	timeout := 15 * time.Second
	if v := os.Getenv("SAMSA_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			timeout = d
		}
	}
	fs.DurationVar(&c.timeout, "timeout", timeout, "")
}

// client returns a checked client for the brokers, with opts.
func (c *conn) client(ctx context.Context, stderr io.Writer, opts ...kgo.Opt) (*kgo.Client, error) {
	cfg := kafka.Config{TLS: c.tls, SASL: c.sasl, ClientID: "samsa-cli",
		Logger: hclog.New(&hclog.LoggerOptions{Name: "samsa", Level: hclog.Warn, Output: stderr})}
	for _, b := range strings.Split(c.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.Brokers = append(cfg.Brokers, b)
		}
	}
	cfg.SASL.Password = os.Getenv("SAMSA_SASL_PASSWORD")
	if c.saslPassFile != "" {
		pw, err := os.ReadFile(c.saslPassFile)
		if err != nil {
			return nil, fmt.Errorf("flag --sasl-password-file: %w", err)
		}
		cfg.SASL.Password = strings.TrimRight(string(pw), "\r\n")
	}
	base, err := cfg.Opts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, err
	}
	if err := kafka.Check(ctx, cfg, cl, c.timeout); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// usageErr marks a mistake in the command line: exit code 2.
type usageErr struct{ error }

// admin runs an admin helper and returns the exit code.
func admin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := args[0]
	sub := ""
	rest := args[1:]
	if (cmd == "topics" || cmd == "groups") && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		sub, rest = rest[0], rest[1:]
	}
	if sub == "" {
		sub = "list"
	}
	name := strings.TrimSpace(cmd + " " + sub)
	if cmd != "topics" && cmd != "groups" {
		name = cmd
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c conn
	c.register(fs)
	var o adminOpts
	switch name {
	case "topics create":
		fs.IntVar(&o.partitions, "partitions", 4, "")
		fs.IntVar(&o.replication, "replication-factor", -1, "")
		fs.Var(&o.configs, "config", "")
	case "produce":
		fs.StringVar(&o.keySep, "key-separator", "", "")
		fs.IntVar(&o.partition, "partition", -1, "")
	case "consume":
		fs.BoolVar(&o.fromEnd, "from-end", false, "")
		fs.BoolVar(&o.untilEnd, "until-end", false, "")
		fs.StringVar(&o.keyAs, "key-as", "string", "")
		fs.StringVar(&o.valueAs, "value-as", "string", "")
		fs.BoolVar(&o.offsets, "offsets", false, "")
	}
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage+adminUsage)
			return 0
		}
		fmt.Fprintf(stderr, "samsa %s: %v (see samsa help)\n", name, err)
		return 2
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = o.run(ctx, name, &c, pos, stdin, stdout, stderr)
	var ue usageErr
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "samsa %s: %v (see samsa help)\n", name, ue.error)
		return 2
	default:
		fmt.Fprintf(stderr, "samsa %s: %v\n", name, err)
		return 1
	}
}

// parseInterleaved parses flags that may come before, between or after
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errors.New(strings.NewReplacer("flag -", "flag --", "defined: -", "defined: --").Replace(err.Error()))
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
}

// adminOpts are the flags of the admin helpers beyond the connection.
type adminOpts struct {
	partitions, replication int
	configs                 multiFlag
	keySep                  string
	partition               int
	fromEnd, untilEnd       bool
	keyAs, valueAs          string
	offsets                 bool
}

func (o *adminOpts) run(ctx context.Context, name string, c *conn, pos []string, stdin io.Reader, stdout, stderr io.Writer) error {
	needs := func(what string, min int) error {
		if len(pos) < min {
			return usageErr{fmt.Errorf("missing %s", what)}
		}
		return nil
	}
	switch name {
	case "topics list", "groups list":
		if len(pos) > 0 {
			return usageErr{fmt.Errorf("unexpected argument %q", pos[0])}
		}
	case "topics describe", "topics create", "topics delete":
		if err := needs("TOPIC", 1); err != nil {
			return err
		}
	case "groups describe":
		if err := needs("GROUP", 1); err != nil {
			return err
		}
	case "produce", "consume":
		if len(pos) != 1 {
			return usageErr{errors.New("want one TOPIC")}
		}
	case "lag":
	default:
		return usageErr{fmt.Errorf("unknown command %q", name)}
	}
	if name == "consume" {
		for _, as := range []string{o.keyAs, o.valueAs} {
			if as != "string" && as != "int64" && as != "hex" {
				return usageErr{fmt.Errorf("flag --key-as/--value-as: %q is not one of string, int64, hex", as)}
			}
		}
		return o.consume(ctx, c, pos[0], stdout, stderr)
	}
	if name == "produce" {
		return o.produce(ctx, c, pos[0], stdin, stdout, stderr)
	}
	cl, err := c.client(ctx, stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	switch name {
	case "topics list":
		return topicsList(ctx, adm, stdout)
	case "topics describe":
		return topicsDescribe(ctx, adm, pos, stdout)
	case "topics create":
		return o.topicsCreate(ctx, adm, pos, stdout)
	case "topics delete":
		return topicsDelete(ctx, adm, pos, stdout)
	case "groups list":
		return groupsList(ctx, adm, stdout)
	case "groups describe":
		return groupsDescribe(ctx, adm, pos, stdout)
	default: // lag
		return lag(ctx, adm, pos, stdout)
	}
}

func topicsList(ctx context.Context, adm *kadm.Client, w io.Writer) error {
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	starts, ends, err := bounds(ctx, adm, details.Names())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tREPLICAS\tRECORDS")
	for _, d := range details.Sorted() {
		if d.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t%v\n", d.Topic, d.Err)
			continue
		}
		var records int64
		for p := range d.Partitions {
			records += ends[d.Topic][p] - starts[d.Topic][p]
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", d.Topic, len(d.Partitions), d.Partitions.NumReplicas(), records)
	}
	return tw.Flush()
}

// bounds returns the start and end offset of every partition of topics.
func bounds(ctx context.Context, adm *kadm.Client, topics []string) (starts, ends map[string]map[int32]int64, err error) {
	starts, ends = map[string]map[int32]int64{}, map[string]map[int32]int64{}
	if len(topics) == 0 {
		return starts, ends, nil
	}
	for _, x := range []struct {
		list func(context.Context, ...string) (kadm.ListedOffsets, error)
		into map[string]map[int32]int64
	}{{adm.ListStartOffsets, starts}, {adm.ListEndOffsets, ends}} {
		l, err := x.list(ctx, topics...)
		if err != nil {
			return nil, nil, err
		}
		l.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				if x.into[o.Topic] == nil {
					x.into[o.Topic] = map[int32]int64{}
				}
				x.into[o.Topic][o.Partition] = o.Offset
			}
		})
	}
	return starts, ends, nil
}

func topicsDescribe(ctx context.Context, adm *kadm.Client, topics []string, w io.Writer) error {
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return err
	}
	for _, t := range topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			return fmt.Errorf("topic %q: %w", t, cmpErr(d.Err, kerr.UnknownTopicOrPartition))
		}
	}
	starts, ends, err := bounds(ctx, adm, topics)
	if err != nil {
		return err
	}
	configs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return err
	}
	for i, t := range topics {
		d := details[t]
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Topic %s: %d partitions, %d replicas\n", t, len(d.Partitions), d.Partitions.NumReplicas())
		if rc, err := configs.On(t, nil); err == nil {
			var set []string
			for _, c := range rc.Configs {
				if c.Value != nil && c.Source != 5 { // 5: DEFAULT_CONFIG
					set = append(set, c.Key+"="+*c.Value)
				}
			}
			slices.Sort(set)
			if len(set) > 0 {
				fmt.Fprintf(w, "Config: %s\n", strings.Join(set, " "))
			}
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PARTITION\tLEADER\tREPLICAS\tSTART\tEND\tRECORDS")
		for _, p := range d.Partitions.Sorted() {
			s, e := starts[t][p.Partition], ends[t][p.Partition]
			fmt.Fprintf(tw, "  %d\t%d\t%v\t%d\t%d\t%d\n", p.Partition, p.Leader, p.Replicas, s, e, e-s)
		}
		tw.Flush()
	}
	return nil
}

func cmpErr(err, def error) error {
	if err == nil {
		return def
	}
	return err
}

func (o *adminOpts) topicsCreate(ctx context.Context, adm *kadm.Client, topics []string, w io.Writer) error {
	if o.partitions < 1 {
		return usageErr{fmt.Errorf("flag --partitions: %d: must be at least 1", o.partitions)}
	}
	configs := map[string]*string{}
	for _, kv := range o.configs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageErr{fmt.Errorf("flag --config: %q: want KEY=VALUE", kv)}
		}
		configs[k] = kadm.StringPtr(v)
	}
	resps, err := adm.CreateTopics(ctx, int32(o.partitions), int16(o.replication), configs, topics...)
	if err != nil {
		return err
	}
	var errs []error
	// By name: kadm's Sorted orders by topic ID first, which is random.
	for _, topic := range slices.Sorted(maps.Keys(resps)) {
		r := resps[topic]
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("topic %q: %w", r.Topic, r.Err))
			continue
		}
		fmt.Fprintf(w, "%s: created with %d partitions\n", r.Topic, r.NumPartitions)
	}
	return errors.Join(errs...)
}

func topicsDelete(ctx context.Context, adm *kadm.Client, topics []string, w io.Writer) error {
	resps, err := adm.DeleteTopics(ctx, topics...)
	if err != nil {
		return err
	}
	var errs []error
	// By name: kadm's Sorted orders by topic ID first, which is random.
	for _, topic := range slices.Sorted(maps.Keys(resps)) {
		r := resps[topic]
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("topic %q: %w", r.Topic, r.Err))
			continue
		}
		fmt.Fprintf(w, "%s: deleted\n", r.Topic)
	}
	return errors.Join(errs...)
}

func groupsList(ctx context.Context, adm *kadm.Client, w io.Writer) error {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	described, err := adm.DescribeGroups(ctx, listed.Groups()...)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tSTATE\tMEMBERS\tPROTOCOL")
	for _, g := range described.Sorted() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", g.Group, g.State, len(g.Members), g.Protocol)
	}
	return tw.Flush()
}

func groupsDescribe(ctx context.Context, adm *kadm.Client, groups []string, w io.Writer) error {
	lags, err := adm.Lag(ctx, groups...)
	if err != nil {
		return err
	}
	for i, g := range groups {
		l, ok := lags[g]
		if !ok || l.Error() != nil {
			return fmt.Errorf("group %q: %w", g, cmpErr(l.Error(), kerr.GroupIDNotFound))
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Group %s: %s, %d members, protocol %s\n", g, l.State, len(l.Members), l.Protocol)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		if len(l.Members) > 0 {
			fmt.Fprintln(tw, "  MEMBER\tCLIENT\tHOST\tPARTITIONS")
			for _, m := range l.Members {
				var parts []string
				if a, ok := m.Assigned.AsConsumer(); ok {
					for _, t := range a.Topics {
						for _, p := range t.Partitions {
							parts = append(parts, fmt.Sprintf("%s/%d", t.Topic, p))
						}
					}
				}
				slices.Sort(parts)
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", m.MemberID, m.ClientID, strings.TrimPrefix(m.ClientHost, "/"), strings.Join(parts, " "))
			}
			tw.Flush()
			fmt.Fprintln(w)
		}
		writeLag(w, l)
	}
	return nil
}

// writeLag writes a group's committed offsets and lag per partition.
func writeLag(w io.Writer, l kadm.DescribedGroupLag) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG\tMEMBER")
	var total int64
	for _, ls := range l.Lag.Sorted() {
		committed, member := "-", "-"
		if ls.Commit.At >= 0 {
			committed = strconv.FormatInt(ls.Commit.At, 10)
		}
		if ls.Member != nil {
			member = ls.Member.MemberID
		}
		lag := max(0, ls.Lag)
		total += lag
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\t%d\t%s\n", ls.Topic, ls.Partition, committed, ls.End.Offset, lag, member)
	}
	tw.Flush()
	fmt.Fprintf(w, "Total lag of %s: %d\n", l.Group, total)
}

func lag(ctx context.Context, adm *kadm.Client, groups []string, w io.Writer) error {
	if len(groups) == 0 {
		listed, err := adm.ListGroups(ctx)
		if err != nil {
			return err
		}
		groups = listed.Groups()
		slices.Sort(groups)
		if len(groups) == 0 {
			fmt.Fprintln(w, "No consumer groups.")
			return nil
		}
	}
	lags, err := adm.Lag(ctx, groups...)
	if err != nil {
		return err
	}
	for i, g := range groups {
		l, ok := lags[g]
		if !ok || l.Error() != nil {
			return fmt.Errorf("group %q: %w", g, cmpErr(l.Error(), kerr.GroupIDNotFound))
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		writeLag(w, l)
	}
	return nil
}

// produce writes each line of in as a record of topic, and reports how
// many it wrote.
func (o *adminOpts) produce(ctx context.Context, c *conn, topic string, in io.Reader, w, stderr io.Writer) error {
	opts := []kgo.Opt{kgo.DefaultProduceTopic(topic)}
	if o.partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl, err := c.client(ctx, stderr, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var n int
	var first error
	for sc.Scan() {
		line := sc.Text()
		r := &kgo.Record{Value: []byte(line), Partition: int32(o.partition)}
		if o.keySep != "" {
			k, v, ok := strings.Cut(line, o.keySep)
			if !ok {
				return fmt.Errorf("line %d has no key separator %q: %q", n+1, o.keySep, line)
			}
			r.Key, r.Value = []byte(k), []byte(v)
		}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil && first == nil {
				first = err
			}
		})
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read standard input: %w", err)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if first != nil {
		return fmt.Errorf("write to %s: %w", topic, first)
	}
	fmt.Fprintf(stderr, "samsa produce: wrote %d records to %s\n", n, topic)
	return nil
}

// consume prints the records of topic, read_committed, from the start
// (or the end), until the end offsets seen at start with --until-end.
func (o *adminOpts) consume(ctx context.Context, c *conn, topic string, w, stderr io.Writer) error {
	at := kgo.NewOffset().AtStart()
	if o.fromEnd {
		at = kgo.NewOffset().AtEnd()
	}
	cl, err := c.client(ctx, stderr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(at),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer cl.Close()
	var until map[int32]int64
	if o.untilEnd {
		adm := kadm.NewClient(cl)
		starts, ends, err := bounds(ctx, adm, []string{topic})
		if err != nil {
			return err
		}
		if _, ok := ends[topic]; !ok {
			return fmt.Errorf("topic %q: %w", topic, kerr.UnknownTopicOrPartition)
		}
		until = map[int32]int64{} // the partitions with records left to read
		for p, e := range ends[topic] {
			if !o.fromEnd && e > starts[topic][p] {
				until[p] = e
			}
		}
	}
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	for !o.untilEnd || len(until) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil // interrupted: a clean end
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = errors.Join(ferr, fmt.Errorf("%s/%d: %w", t, p, err)) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := until[r.Partition]; ok && r.Offset+1 >= end {
				delete(until, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			if o.offsets {
				fmt.Fprintf(bw, "%d@%d\t", r.Partition, r.Offset)
			}
			fmt.Fprintf(bw, "%s\t%s\n", show(r.Key, o.keyAs), show(r.Value, o.valueAs))
		})
		bw.Flush()
	}
	return nil
}

// show renders b as asked: string (quoted where not plain text), int64
// (8-byte big-endian) or hex. A null is "null".
func show(b []byte, as string) string {
	switch {
	case b == nil:
		return "null"
	case as == "int64" && len(b) == 8:
		return strconv.FormatInt(int64(binary.BigEndian.Uint64(b)), 10)
	case as == "hex":
		return hex.EncodeToString(b)
	}
	return stream.QuoteIfNeeded(b)
}
