package runner

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/connectors/kafka"
)

type topicsFlags struct {
	partitions  int
	replication int
}

func (c *cli) topicsFlagSet() (*flagSet, *runFlags, *topicsFlags) {
	f, rf := c.runFlagSet("create-topics")
	tf := &topicsFlags{}
	f.Int(&tf.partitions, "partitions", 4, "partitions of each topic created")
	f.Int(&tf.replication, "replication-factor", -1, "replication factor of each topic created; -1 uses the brokers' default")
	return f, rf, tf
}

// createTopics is the create-topics command: it creates the job's input
// and output topics that do not exist yet. Without --brokers it creates
// them on the embedded broker's data under --state-dir, where `run` will
// find them.
func (c *cli) createTopics(ctx context.Context, args []string) error {
	f, rf, tf := c.topicsFlagSet()
	if err := f.parse(args, c.env); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if tf.partitions < 1 {
		return usageError{fmt.Errorf("flag --partitions: %d: must be at least 1", tf.partitions)}
	}
	if err := rf.brokerFlags.resolve(&rf.cfg); err != nil {
		return usageError{err}
	}
	cfg := rf.cfg
	cfg.EmbeddedListen = rf.listen
	cfg.EnsureDefaults(c.job.Name())
	stop, err := brokersOrEmbedded(&cfg)
	if err != nil {
		return err
	}
	defer stop()
	topo, err := c.job.Build()
	if err != nil {
		return err
	}
	topics := append(topo.Inputs(), topo.Outputs()...)
	created, err := ensureTopics(ctx, cfg, topics, int32(tf.partitions), int16(tf.replication))
	if err != nil {
		return err
	}
	for _, t := range topics {
		state := "exists"
		if slices.Contains(created, t) {
			state = fmt.Sprintf("created with %d partitions", tf.partitions)
		}
		fmt.Fprintf(c.stdout, "%s: %s\n", t, state)
	}
	return nil
}

// ensureTopics creates those of topics that do not exist and returns
// their names.
func ensureTopics(ctx context.Context, cfg Config, topics []string, partitions int32, replication int16) ([]string, error) {
	adm, closeAdm, err := adminClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer closeAdm()
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("runner: list topics: %w", err)
	}
	var missing []string
	for _, t := range topics {
		if d, ok := details[t]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	resps, err := adm.CreateTopics(ctx, partitions, replication, nil, missing...)
	if err != nil {
		return nil, fmt.Errorf("runner: create topics %s: %w", strings.Join(missing, ", "), err)
	}
	for _, r := range resps.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return nil, fmt.Errorf("runner: create topic %q: %w", r.Topic, r.Err)
		}
	}
	return missing, nil
}

// adminClient returns a checked admin client for cfg's brokers.
func adminClient(ctx context.Context, cfg Config) (*kadm.Client, func(), error) {
	kc := kafkaConfig(cfg, "samsa-admin")
	opts, err := kc.Opts()
	if err != nil {
		return nil, nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("runner: %w", err)
	}
	if err := kafka.Check(ctx, kc, cl, cfg.ConnectTimeout); err != nil {
		cl.Close()
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl.Close, nil
}

// kafkaConfig is how cfg reaches its brokers.
func kafkaConfig(cfg Config, clientID string) kafka.Config {
	return kafka.Config{
		Brokers:  cfg.Brokers,
		ClientID: clientID,
		TLS:      cfg.TLS,
		SASL:     cfg.SASL,
		Logger:   cfg.Logger.Named("kafka"),
	}
}
