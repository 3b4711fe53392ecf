package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/stream"
)

// Bad records: what a runner does with an input record that fails to
// deserialize or to process (the job's error policies, overridden by
// Config.OnDeserializeError and Config.OnProcessError), and with the
// limits on record sizes that make an oversized output fail on the
// record that caused it rather than at the next commit.

// defaultMaxMessageBytes is Kafka's default max.message.bytes, and the
// producer's default batch limit: the limit of a topic whose
// configuration cannot be read.
const defaultMaxMessageBytes = 1_000_012

// maxBrokerWrite is the producer's limit on one request (kgo's default
// BrokerMaxWriteBytes): no record batch is larger, whatever the topic
// allows.
const maxBrokerWrite = 100<<20 - 1<<10

// badLogEvery is how often at most a kind of bad or dropped record is
// logged; the metrics count every one.
const badLogEvery = 30 * time.Second

// badRecords carries out a run's policies for bad records and reports
// them: a log line (rate limited) and a metric. Safe for concurrent use
// by the tasks.
type badRecords struct {
	log           hclog.Logger
	onDeserialize stream.ErrorPolicy
	onProcess     stream.ErrorPolicy
	onDropped     stream.ErrorPolicy
	dlqTopic      string // "" unless a policy is PolicyDeadLetter
	dlqPartitions int32
	limits        map[string]int // largest record batch per topic we write; read-only

	counted *prometheus.CounterVec // by kind and policy
	dropped *prometheus.CounterVec // by reason
	logs    logLimiter
}

// prepareBadRecords resolves the run's error policies, creates the
// dead-letter topic if a policy needs it, and reads the record-size limits
// of every topic the job writes. partitions holds every topic of the job,
// internal ones included.
func (r *Runner) prepareBadRecords(ctx context.Context, adm *kadm.Client, partitions map[string]int32) (*badRecords, error) {
	b := &badRecords{
		log:           r.log,
		onDeserialize: orPolicy(r.cfg.OnDeserializeError, r.topo.OnDeserializeError()),
		onProcess:     orPolicy(r.cfg.OnProcessError, r.topo.OnProcessError()),
		onDropped:     orPolicy(r.cfg.OnDropped, r.topo.OnDropped()),
		limits:        map[string]int{},
		counted: registerCounter(r.metrics.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samsa_bad_records_total", ConstLabels: prometheus.Labels{"job": r.topo.Name()},
			Help: "Input records that failed and were skipped or dead-lettered, by kind (deserialize, process) and policy (skip, dlq).",
		}, []string{"kind", "policy"})),
		dropped: registerCounter(r.metrics.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samsa_dropped_records_total", ConstLabels: prometheus.Labels{"job": r.topo.Name()},
			Help: "Records operators dropped on purpose (a null key where a key is needed, a record too late for its window), by reason.",
		}, []string{"reason"})),
		logs: logLimiter{every: badLogEvery, now: time.Now},
	}
	written := r.topo.Outputs()
	for _, it := range r.topo.Internal() {
		written = append(written, it.Name)
	}
	limits, err := r.topicLimits(ctx, adm, append(written, r.topo.Inputs()...))
	if err != nil {
		return nil, err
	}
	for _, t := range written {
		b.limits[t] = limits[t]
	}
	if b.onDeserialize == stream.PolicyDeadLetter || b.onProcess == stream.PolicyDeadLetter || b.onDropped == stream.PolicyDeadLetter {
		var inputMax int
		for _, t := range r.topo.Inputs() {
			inputMax = max(inputMax, limits[t])
		}
		if err := r.ensureDeadLetterTopic(ctx, adm, partitions, inputMax); err != nil {
			return nil, err
		}
		b.dlqTopic = r.topo.DeadLetterTopic()
		b.dlqPartitions = partitions[b.dlqTopic]
		dl, err := r.topicLimits(ctx, adm, []string{b.dlqTopic})
		if err != nil {
			return nil, err
		}
		b.limits[b.dlqTopic] = dl[b.dlqTopic]
	}
	// The series that may count exist from the start, at zero, so that
	// a dashboard's rate of them is defined before the first bad record.
	for kind, p := range map[string]stream.ErrorPolicy{stream.KindDeserialize: b.onDeserialize, stream.KindProcess: b.onProcess} {
		if p != stream.PolicyFail {
			b.counted.WithLabelValues(kind, string(p))
		}
	}
	return b, nil
}

func orPolicy(p, def stream.ErrorPolicy) stream.ErrorPolicy {
	if p == "" {
		return def
	}
	return p
}

// registerCounter registers c, or returns the counter a previous run of
// the same Runner registered.
func registerCounter(reg *prometheus.Registry, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if prev, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return prev
			}
		}
	}
	return c
}

// topicLimits returns the largest record batch each topic accepts: its
// max.message.bytes, within what one produce request may carry. A topic
// whose configuration cannot be read (the brokers' ACLs may not allow
// DescribeConfigs) gets Kafka's default, with a warning.
func (r *Runner) topicLimits(ctx context.Context, adm *kadm.Client, topics []string) (map[string]int, error) {
	slices.Sort(topics)
	topics = slices.Compact(topics)
	limits := make(map[string]int, len(topics))
	for _, t := range topics {
		limits[t] = defaultMaxMessageBytes
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.log.Warn("cannot read the topics' max.message.bytes; assuming Kafka's default", "default", defaultMaxMessageBytes, "error", err)
		return limits, nil
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			r.log.Warn("cannot read the topic's max.message.bytes; assuming Kafka's default", "topic", rc.Name, "default", defaultMaxMessageBytes, "error", rc.Err)
			continue
		}
		for _, c := range rc.Configs {
			if c.Key != "max.message.bytes" || c.Value == nil {
				continue
			}
			n, err := strconv.Atoi(*c.Value)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("runner: topic %q: max.message.bytes %q is not a positive number", rc.Name, *c.Value)
			}
			limits[rc.Name] = min(n, maxBrokerWrite)
		}
	}
	return limits, nil
}

// ensureDeadLetterTopic creates the job's dead-letter topic if it does not
// exist, with the largest partition count of the job's inputs and room
// for the largest input record plus the headers describing its failure.
// An existing topic is used as it is.
func (r *Runner) ensureDeadLetterTopic(ctx context.Context, adm *kadm.Client, partitions map[string]int32, inputMax int) error {
	topic := r.topo.DeadLetterTopic()
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("runner: list dead-letter topic: %w", r.denied(err, topic, "Describe"))
	}
	if d, ok := details[topic]; ok && d.Err == nil {
		partitions[topic] = int32(len(d.Partitions))
		return nil
	} else if ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("runner: dead-letter topic %q: %w", topic, r.denied(d.Err, topic, "Describe"))
	}
	n := engine.DeadLetterPartitions(r.topo, partitions)
	configs := map[string]*string{
		"cleanup.policy":    kadm.StringPtr("delete"),
		"max.message.bytes": kadm.StringPtr(strconv.Itoa(min(inputMax+64<<10, maxBrokerWrite))),
	}
	resp, err := adm.CreateTopic(ctx, n, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil:
		r.log.Info("created the dead-letter topic", "topic", topic, "partitions", n)
		if err := waitForTopics(ctx, adm, []string{topic}); err != nil {
			return err
		}
	case errors.Is(err, kerr.TopicAlreadyExists):
		// Another instance was first; its count is ours.
		return r.ensureDeadLetterTopic(ctx, adm, partitions, inputMax)
	default:
		return fmt.Errorf("runner: create dead-letter topic %q: %w", topic, r.denied(err, topic, "Create"))
	}
	partitions[topic] = n
	return nil
}

// batchMaxBytes is the producer's batch limit for topic: what the topic
// accepts, so that a batch of many small records is never refused.
func (b *badRecords) batchMaxBytes(topic string) int32 {
	if n, ok := b.limits[topic]; ok {
		return int32(max(n, 512))
	}
	return defaultMaxMessageBytes
}

// taskOptions are the engine options of every task of the run.
func (b *badRecords) taskOptions() []engine.Option {
	return []engine.Option{
		engine.WithPolicy(b.onDeserialize, b.onProcess, b.dlqTopic, b.dlqPartitions),
		engine.WithDroppedPolicy(b.onDropped),
		engine.WithRecordLimits(b.limits),
		engine.WithHooks(engine.Hooks{BadRecord: b.badRecord, Dropped: b.droppedRecord}),
	}
}

func (b *badRecords) badRecord(br engine.BadRecord) {
	b.counted.WithLabelValues(br.Kind, string(br.Policy)).Inc()
	what := "skipped"
	if br.Policy == stream.PolicyDeadLetter {
		what = "dead-lettered"
	}
	ok, held := b.logs.allow(br.Kind + " " + what)
	if !ok {
		return
	}
	msg := fmt.Sprintf("%s a record that failed to %s", what, map[string]string{stream.KindDeserialize: "deserialize", stream.KindProcess: "process"}[br.Kind])
	args := []any{"task", br.Task.String(), "topic", br.Record.Topic, "partition", br.Record.Partition, "offset", br.Record.Offset, "error", br.Err}
	if br.Policy == stream.PolicyDeadLetter {
		args = append(args, "dead_letter_topic", b.dlqTopic)
	}
	if held > 0 {
		args = append(args, "more_since_last_logged", held)
	} else {
		args = append(args, "note", fmt.Sprintf("logged at most every %s; metric samsa_bad_records_total counts them all", b.logs.every))
	}
	var pe *stream.PanicError
	if errors.As(br.Err, &pe) {
		args = append(args, "stack", string(pe.Stack))
	}
	b.log.Warn(msg, args...)
}

func (b *badRecords) droppedRecord(d engine.Dropped) {
	b.dropped.WithLabelValues(d.Reason).Inc()
	ok, held := b.logs.allow("dropped " + d.Reason)
	if !ok {
		return
	}
	args := []any{"reason", d.Reason, "task", d.Task.String()}
	if d.Topic != "" {
		args = append(args, "topic", d.Topic, "partition", d.Partition, "offset", d.Offset)
	}
	if held > 0 {
		args = append(args, "more_since_last_logged", held)
	} else {
		args = append(args, "note", fmt.Sprintf("logged at most every %s; metric samsa_dropped_records_total counts them all", b.logs.every))
	}
	b.log.Info("dropped a record", args...)
}

// logLimiter lets the first event of each kind be logged at once, then at
// most one every interval, telling how many it held back in between.
type logLimiter struct {
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*limited
}

type limited struct {
	last time.Time // when the last line was let through
	held int64     // events held back since
}

// allow reports whether an event of kind may be logged now and, if so,
// how many events of the kind were held back since the last one logged.
func (l *logLimiter) allow(kind string) (ok bool, held int64) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kinds == nil {
		l.kinds = map[string]*limited{}
	}
	k := l.kinds[kind]
	if k == nil {
		l.kinds[kind] = &limited{last: now}
		return true, 0
	}
	if now.Sub(k.last) < l.every {
		k.held++
		return false, 0
	}
	held, k.held, k.last = k.held, 0, now
	return true, held
}

func validPolicy(p stream.ErrorPolicy) bool {
	_, err := stream.ParseErrorPolicy(string(p))
	return err == nil
}

// tooLargeHint explains a write the brokers refused as too large. The
// runner checks each record against its topic's limit when it is emitted
// and batches within the limit, so this means the limit was lowered
// while the job ran.
func tooLargeHint(r *kgo.Record, err error) string {
	if !errors.Is(err, kerr.MessageTooLarge) && !errors.Is(err, kerr.RecordListTooLarge) {
		return ""
	}
	return fmt.Sprintf(" (the record is %d bytes as a batch of its own; if the topic's max.message.bytes was lowered since the job started, restart the job to have it check records and batches against the current limit)",
		stream.RecordBatchSize(r.Key, r.Value, nil))
}
