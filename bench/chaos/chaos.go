package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A fault, at a point of the input: when the producer has written at
// least at records.
type fault struct {
	at   int64
	kind faultKind
}

type faultKind int

const (
	killInstance faultKind = iota
	restartBroker
	churn // add an instance, or stop one
)

// schedule draws the faults of a run from rng, at points between 5% and
// 95% of the input, in input order.
func schedule(cfg config, rng *rand.Rand) []fault {
	var fs []fault
	add := func(n int, k faultKind) {
		for range n {
			fs = append(fs, fault{at: int64(float64(cfg.records) * (0.05 + 0.9*rng.Float64())), kind: k})
		}
	}
	add(cfg.kills, killInstance)
	add(cfg.brokerRestarts, restartBroker)
	add(cfg.rebalances, churn)
	slices.SortStableFunc(fs, func(a, b fault) int { return int(a.at - b.at) })
	return fs
}

// run is one run of the command: its processes and what it counted.
type runState struct {
	cfg      config
	out      io.Writer
	began    time.Time
	rng      *rand.Rand // the faults' choices; the keys have their own
	dir      string
	jobBin   string
	broker   *broker
	all      []*instance // every instance ever started
	running  []*instance
	produced atomic.Int64 // acknowledged input records
	retries  atomic.Int64 // records the producer had to write again
	res      *result
	logMu    sync.Mutex
}

// chaos runs the job through the faults of cfg and checks the outcome.
// An error means the run could not finish (the result then holds what was
// counted so far).
func chaos(ctx context.Context, cfg config, out io.Writer) (res *result, err error) {
	r := &runState{cfg: cfg, out: out, began: time.Now(), rng: rand.New(rand.NewPCG(cfg.seed, 1)), res: &result{cfg: cfg}}
	res = r.res
	r.dir = cfg.workDir
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "samsa-chaos-"); err != nil {
			return res, fmt.Errorf("work directory: %w", err)
		}
	} else if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return res, fmt.Errorf("work directory %s (--work-dir): %w", r.dir, err)
	}
	res.workDir = r.dir
	defer func() {
		for _, in := range r.running {
			in.p.kill()
		}
		if r.broker != nil && r.broker.p != nil && !r.broker.p.exited() {
			if serr := r.broker.p.stop(time.Minute); serr != nil && err == nil {
				res.anomaly("the broker did not stop cleanly: %v", serr)
			}
		}
		res.wall = time.Since(r.began)
		if err == nil && len(res.anomalies) == 0 && !cfg.keep && cfg.workDir == "" {
			os.RemoveAll(r.dir)
			res.workDir = ""
		}
	}()

	fmt.Fprintf(out, "chaos: %s, %d records over %d keys, %d partitions, %d instances, seed %d\n",
		cfg.processing, cfg.records, cfg.keys, cfg.partitions, cfg.instances, cfg.seed)
	fmt.Fprintf(out, "chaos: work directory %s\n", r.dir)
	samsaBin, jobBin := cfg.samsaBin, cfg.jobBin
	if samsaBin == "" || jobBin == "" {
		built, job, err := buildBinaries(ctx, filepath.Join(r.dir, "bin"), cfg.race)
		if err != nil {
			return res, err
		}
		if samsaBin == "" {
			samsaBin = built
		}
		if jobBin == "" {
			jobBin = job
		}
	}
	r.jobBin = jobBin
	r.broker = &broker{
		bin: samsaBin, dataDir: filepath.Join(r.dir, "broker"), logPath: filepath.Join(r.dir, "broker.log"),
		// A killed instance's tasks move after --session-timeout, which
		// the broker must accept.
		extra: []string{"--group-min-session-timeout", "100ms"},
	}
	if err := r.broker.start(); err != nil {
		return res, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.broker.addr))
	if err != nil {
		return res, fmt.Errorf("client of %s: %w", r.broker.addr, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := createTopics(ctx, adm, cfg.partitions); err != nil {
		return res, err
	}
	for range cfg.instances {
		if err := r.addInstance(); err != nil {
			return res, err
		}
	}

	prodCtx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	produced := make(chan error, 1)
	go func() { produced <- r.produce(prodCtx) }()

	faults := schedule(cfg, r.rng)
	var prodErr error
	prodDone := false
	for _, f := range faults {
		for !prodDone && r.produced.Load() < f.at {
			select {
			case prodErr = <-produced:
				prodDone = true
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if err := r.checkInstances(); err != nil {
				return res, err
			}
		}
		if prodErr != nil {
			return res, prodErr
		}
		if err := r.inject(ctx, f); err != nil {
			return res, err
		}
	}
	if !prodDone {
		select {
		case prodErr = <-produced:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	if prodErr != nil {
		return res, prodErr
	}
	res.produced, res.produceRetries = r.produced.Load(), r.retries.Load()
	r.logf("all %d records produced; waiting for the job to commit them", res.produced)
	if err := r.waitCommitted(ctx, adm); err != nil {
		return res, err
	}
	r.logf("the group committed all of the input; stopping the instances")
	for _, in := range slices.Clone(r.running) {
		if err := r.stopInstance(in); err != nil {
			res.anomaly("%v", err)
		}
	}
	res.rebalances = countRebalances(r.all)
	return res, r.verify(ctx, adm)
}

func (r *runState) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	fmt.Fprintf(r.out, "  [%7.1fs] %s\n", time.Since(r.began).Seconds(), fmt.Sprintf(format, args...))
}

// createTopics creates the job's input and output topics.
func createTopics(ctx context.Context, adm *kadm.Client, partitions int) error {
	resps, err := adm.CreateTopics(ctx, int32(partitions), 1, nil, inputTopic, outputTopic)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		return fmt.Errorf("create topics %s and %s: %w", inputTopic, outputTopic, err)
	}
	return nil
}

// addInstance starts a new instance, with a new state directory.
func (r *runState) addInstance() error {
	id := len(r.all)
	in := &instance{
		id:       id,
		name:     fmt.Sprintf("instance %d", id),
		stateDir: filepath.Join(r.dir, fmt.Sprintf("state-%d", id)),
		txnID:    fmt.Sprintf("chaos-%d", id),
		logPath:  filepath.Join(r.dir, fmt.Sprintf("instance-%d.log", id)),
	}
	if err := in.start(r.jobBin, r.broker.addr, r.cfg); err != nil {
		return err
	}
	if err := in.waitStarted(time.Minute); err != nil {
		return err
	}
	r.all = append(r.all, in)
	r.running = append(r.running, in)
	return nil
}

// stopInstance stops in with SIGTERM: a clean shutdown, which must exit 0.
func (r *runState) stopInstance(in *instance) error {
	r.running = slices.DeleteFunc(r.running, func(x *instance) bool { return x == in })
	if err := in.p.stop(time.Minute); err != nil {
		return fmt.Errorf("%s did not stop cleanly on SIGTERM: %v; its log: %s", in.name, err, in.logPath)
	}
	return nil
}

// checkInstances returns an error if an instance exited on its own.
func (r *runState) checkInstances() error {
	for _, in := range r.running {
		if err := in.check(); err != nil {
			return err
		}
	}
	return nil
}

// pause sleeps for a random time in [lo, hi).
func (r *runState) pause(ctx context.Context, lo, hi time.Duration) (time.Duration, error) {
	d := lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
	select {
	case <-time.After(d):
		return d, nil
	case <-ctx.Done():
		return d, ctx.Err()
	}
}

// inject applies one fault.
func (r *runState) inject(ctx context.Context, f fault) error {
	at := r.produced.Load()
	switch f.kind {
	case killInstance:
		in := r.running[r.rng.IntN(len(r.running))]
		pid := in.p.pid()
		in.p.kill()
		r.res.kills++
		down, err := r.pause(ctx, 200*time.Millisecond, 2*time.Second)
		if err != nil {
			return err
		}
		if err := in.start(r.jobBin, r.broker.addr, r.cfg); err != nil {
			return err
		}
		if err := in.waitStarted(time.Minute); err != nil {
			return err
		}
		r.logf("produced %9d: SIGKILL %s (pid %d); started again on its state directory after %s", at, in.name, pid, down.Round(time.Millisecond))
	case restartBroker:
		pid := r.broker.p.pid()
		r.broker.p.kill()
		r.res.brokerRestarts++
		down, err := r.pause(ctx, time.Second, 4*time.Second)
		if err != nil {
			return err
		}
		if err := r.broker.start(); err != nil {
			return err
		}
		r.logf("produced %9d: SIGKILL the broker (pid %d); started again on %s and its data directory after %s", at, pid, r.broker.addr, down.Round(time.Millisecond))
	case churn:
		if len(r.running) > r.cfg.instances || (len(r.running) == r.cfg.instances && r.res.added > r.res.stopped && len(r.running) > 1) {
			in := r.running[r.rng.IntN(len(r.running))]
			if err := r.stopInstance(in); err != nil {
				return err
			}
			r.res.stopped++
			r.logf("produced %9d: stopped %s with SIGTERM (%d instances running)", at, in.name, len(r.running))
			return nil
		}
		if err := r.addInstance(); err != nil {
			return err
		}
		r.res.added++
		r.logf("produced %9d: added %s, with an empty state directory (%d instances running)", at, r.running[len(r.running)-1].name, len(r.running))
	}
	return r.checkInstances()
}

// produce writes the input: cfg.records records, keys drawn from the
// seed, each value the record's number, at about cfg.rate records/s. It
// retries what the client fails to deliver (the client itself retries
// across a broker restart) until it is acknowledged.
func (r *runState) produce(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.broker.addr), kgo.DefaultProduceTopic(inputTopic))
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer cl.Close()
	keys := rand.New(rand.NewPCG(r.cfg.seed, 2))
	const batch = 1000
	start := time.Now()
	for next := int64(0); next < r.cfg.records; {
		due := start.Add(time.Duration(float64(next) / float64(r.cfg.rate) * float64(time.Second)))
		select {
		case <-time.After(time.Until(due)):
		case <-ctx.Done():
			return ctx.Err()
		}
		n := min(batch, r.cfg.records-next)
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%05d", keys.IntN(r.cfg.keys)), Value: strconv.AppendInt(nil, next+int64(i), 10)}
		}
		for len(recs) > 0 {
			var failed []*kgo.Record
			var first error
			for _, pr := range cl.ProduceSync(ctx, recs...) {
				if pr.Err != nil {
					failed = append(failed, pr.Record)
					first = cmp(first, pr.Err)
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if len(failed) > 0 {
				r.retries.Add(int64(len(failed)))
				r.logf("producer: %d records not acknowledged (%v); writing them again", len(failed), first)
				time.Sleep(100 * time.Millisecond)
			}
			recs = failed
		}
		next += n
		r.produced.Store(next)
	}
	return nil
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// waitCommitted waits until the group has committed the end offset of
// every partition of the input, for at most cfg.timeout.
func (r *runState) waitCommitted(ctx context.Context, adm *kadm.Client) error {
	deadline := time.Now().Add(r.cfg.timeout)
	lastLog := time.Now()
	for {
		left, err := uncommitted(ctx, adm)
		if err == nil && left == 0 {
			return nil
		}
		if err := r.checkInstances(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the group %s has not committed all of topic %s within %s (--timeout): %d records left (%v); the instances' logs are in %s",
				jobName, inputTopic, r.cfg.timeout, left, err, r.dir)
		}
		if time.Since(lastLog) > 10*time.Second {
			r.logf("%d input records not committed yet", left)
			lastLog = time.Now()
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// uncommitted returns how many input records the group has not committed.
func uncommitted(ctx context.Context, adm *kadm.Client) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, inputTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return -1, err
	}
	committed, err := adm.FetchOffsets(ctx, jobName)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return -1, err
	}
	var left int64
	ends.Each(func(end kadm.ListedOffset) {
		at := int64(0)
		if c, ok := committed.Lookup(inputTopic, end.Partition); ok && c.At >= 0 {
			at = c.At
		}
		left += max(0, end.Offset-at)
	})
	return left, nil
}

// countRebalances counts the assignments the group's leaders logged.
func countRebalances(instances []*instance) int {
	n := 0
	for _, in := range instances {
		b, err := os.ReadFile(in.logPath)
		if err != nil {
			continue
		}
		n += strings.Count(string(b), "balanced the group's tasks")
	}
	return n
}
