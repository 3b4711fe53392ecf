package runner

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/stream"
)

// Demo is a job binary's built-in demonstration (see [WithDemo]).
type Demo struct {
	// Partitions is the partition count of the topics the demo creates.
	// Default: 4.
	Partitions int32
	// Seed writes the sample input by calling emit for each record. A
	// record's partition is chosen from its key; a zero Timestamp means
	// now.
	Seed func(emit func(topic string, rec stream.RawRecord))
	// Show formats one output record for printing. Nil prints the key and
	// value as text (or hex, if they are not printable).
	Show func(topic string, rec stream.RawRecord) string
}

func (c *cli) runDemo(ctx context.Context, cfg Config) error {
	d := c.demo
	if d.Partitions == 0 {
		d.Partitions = 4
	}
	topo, err := c.job.Build()
	if err != nil {
		return err
	}
	if len(cfg.Brokers) == 0 {
		dir, err := os.MkdirTemp("", "samsa-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.StateDir = dir
		cfg.EmbeddedListen = "127.0.0.1:0" // never collide with a running broker
		b, err := startEmbedded(cfg, dir+"/broker")
		if err != nil {
			return err
		}
		defer b.Close()
		cfg.Brokers = []string{b.Addr()}
	}
	if _, err := ensureTopics(ctx, cfg, append(topo.Inputs(), topo.Outputs()...), d.Partitions, -1); err != nil {
		return err
	}

	// Seed, then run the job over exactly the seeded input.
	opts, err := kafkaConfig(cfg, "samsa-demo").Opts()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic(""))...)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	d.Seed(func(topic string, r stream.RawRecord) {
		kr := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		recs = append(recs, kr)
	})
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("demo: seed input: %w", err)
	}
	fmt.Fprintf(c.stdout, "demo: wrote %s to %s\n", plural(len(recs), "sample record"), strings.Join(topo.Inputs(), ", "))

	cfg.UntilEnd = true
	r, err := New(c.job, cfg)
	if err != nil {
		return err
	}
	if err := r.Run(ctx); err != nil {
		return err
	}
	return c.printOutputs(ctx, cl, topo.Outputs())
}

// printOutputs prints every record of the topics, read_committed, per
// topic and partition in offset order.
func (c *cli) printOutputs(ctx context.Context, cl *kgo.Client, topics []string) error {
	show := c.demo.Show
	if show == nil {
		show = func(_ string, r stream.RawRecord) string {
			s := fmt.Sprintf("key=%s value=%s", printable(r.Key), printable(r.Value))
			for _, h := range r.Headers {
				s += fmt.Sprintf(" %s=%s", h.Key, printable(h.Value))
			}
			return s
		}
	}
	for _, topic := range topics {
		recs, err := readAll(ctx, cl, topic)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "\n%s (%s):\n", topic, plural(len(recs), "record"))
		for _, r := range recs {
			raw := stream.RawRecord{Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
			for _, h := range r.Headers {
				raw.Headers = append(raw.Headers, stream.Header{Key: h.Key, Value: h.Value})
			}
			fmt.Fprintf(c.stdout, "  %s[%d]@%d %s\n", topic, r.Partition, r.Offset, show(topic, raw))
		}
	}
	return nil
}

// readAll reads a topic from its start to its current end, read_committed,
// sorted by partition and offset.
func readAll(ctx context.Context, admin *kgo.Client, topic string) ([]*kgo.Record, error) {
	ends, err := kadm.NewClient(admin).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil, nil
	}
	opts := slices.Clone(admin.Opts())
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset+1 >= want[r.Partition] {
				delete(want, r.Partition)
			}
		})
	}
	slices.SortStableFunc(out, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out, nil
}

// printable returns b as text if it is printable UTF-8, else as hex.
func printable(b []byte) string {
	if b == nil {
		return "null"
	}
	if utf8.Valid(b) {
		ok := true
		for _, r := range string(b) {
			if !unicode.IsPrint(r) {
				ok = false
				break
			}
		}
		if ok {
			return strconv.Quote(string(b))
		}
	}
	return fmt.Sprintf("0x%x", b)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
