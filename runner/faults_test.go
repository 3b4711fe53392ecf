package runner_test

// Fault tests: the broker dies under a running job and comes back; the
// state directory becomes unusable. Each checks that nothing is lost,
// that the state stays exact, and that the job says what is wrong while
// it is wrong.

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
)

// ftEnv is a test's view of a broker it runs in a child process.
func ftEnv(t *testing.T, b *brokerProc, topics ...string) *stEnv {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	e := &stEnv{t: t, addr: b.addr, cl: cl, adm: kadm.NewClient(cl)}
	if len(topics) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), stWait)
		defer cancel()
		resps, err := e.adm.CreateTopics(ctx, stPartitions, 1, nil, topics...)
		if err == nil {
			err = resps.Error()
		}
		if err != nil {
			t.Fatalf("create topics %v: %v", topics, err)
		}
	}
	return e
}

// ftThrottle slows each task to about one record per delay, so that a
// fault lands mid-stream.
func ftThrottle(delay time.Duration) func(stream.Stream[string, string]) stream.Stream[string, string] {
	return func(s stream.Stream[string, string]) stream.Stream[string, string] {
		return operators.Process(s, func(next stream.Processor[string, string]) stream.Processor[string, string] {
			return &ftSlow{next: next, delay: delay}
		})
	}
}

type ftSlow struct {
	next  stream.Processor[string, string]
	delay time.Duration
	owed  time.Duration
}

func (s *ftSlow) Process(ctx stream.Context, rec stream.Record[string, string]) error {
	if s.owed += s.delay; s.owed >= time.Millisecond {
		time.Sleep(s.owed)
		s.owed = 0
	}
	return s.next.Process(ctx, rec)
}

// ftMetric reads a gauge or counter of the runner's /metrics (summed over
// its label sets), or -1 if the endpoint cannot be read.
func ftMetric(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// ftMetricsURL waits for the runner to log where it serves its metrics.
func ftMetricsURL(t *testing.T, log *stLog) string {
	t.Helper()
	var url string
	waitWithin(t, stWait, "the runner to serve its metrics", func() bool {
		for _, e := range log.find("serving metrics") {
			url, _ = e["url"].(string)
		}
		return url != ""
	})
	return url
}

// ftCheckNoGaps checks that the outputs of a running count hold, for each
// key, every count from 1 to its final value and nothing else: no input
// lost, none counted twice. At-least-once may repeat an output.
func ftCheckNoGaps(t *testing.T, out []*kgo.Record, want map[string]int64) (dups int) {
	t.Helper()
	seen := map[string]map[int64]bool{}
	for _, r := range out {
		k := string(r.Key)
		if len(r.Value) != 8 {
			t.Fatalf("%s/%d@%d: value %x is not a count", r.Topic, r.Partition, r.Offset, r.Value)
		}
		n := int64(binary.BigEndian.Uint64(r.Value))
		if seen[k] == nil {
			seen[k] = map[int64]bool{}
		}
		if seen[k][n] {
			dups++
		}
		seen[k][n] = true
	}
	var bad []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		for n := int64(1); n <= want[k]; n++ {
			if !seen[k][n] {
				bad = append(bad, fmt.Sprintf("%s: no output of count %d (of %d)", k, n, want[k]))
				break
			}
		}
		if len(seen[k]) > int(want[k]) {
			bad = append(bad, fmt.Sprintf("%s: %d distinct counts, want %d", k, len(seen[k]), want[k]))
		}
	}
	if len(bad) > 0 {
		t.Errorf("outputs: %d keys wrong; the first: %s", len(bad), strings.Join(bad[:min(5, len(bad))], "; "))
	}
	return dups
}

// ftCheckInput checks that topic holds, per key, as many records as the
// test produced: what the job is checked against is what the broker kept.
func ftCheckInput(t *testing.T, e *stEnv, topic string, want map[string]int64) {
	t.Helper()
	got := map[string]int64{}
	for _, r := range e.readAll(topic) {
		if r.Attrs.IsControl() {
			continue
		}
		got[string(r.Key)]++
	}
	var bad []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			bad = append(bad, fmt.Sprintf("%s: %d records, produced %d", k, got[k], want[k]))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("the broker does not hold the input as produced to %s: %d keys differ; the first: %s", topic, len(bad), strings.Join(bad[:min(5, len(bad))], "; "))
	}
}

// ftAllCommitted reports whether group has committed the end offset of
// every partition of topic; false while the broker cannot answer (the test
// is a client too: it retries like any other).
func ftAllCommitted(e *stEnv, group, topic string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return false
	}
	committed, err := e.adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return false
	}
	all := true
	ends.Each(func(end kadm.ListedOffset) {
		if c, ok := committed.Lookup(topic, end.Partition); !ok || c.At != end.Offset {
			all = false
		}
	})
	return all
}

// The broker is SIGKILLed while a stateful job is mid-stream, stays down
// for longer than the job's session timeout and several commit intervals,
// then comes back on the same address with the same data directory. The
// job keeps running: it reports the brokers unreachable meanwhile, resumes
// when they are back, loses nothing, and its state is exact. Under
// exactly-once the broker aborts the transaction that was open when it
// died, and fences its producer epoch, when it restarts: the job aborts
// too, starts again from the last commit and writes no duplicate.
func TestBrokerKilledMidStream(t *testing.T) {
	t.Parallel()
	for _, processing := range []runner.Guarantee{runner.AtLeastOnce, runner.ExactlyOnce} {
		t.Run(string(processing), func(t *testing.T) {
			t.Parallel()
			ftBrokerKilledMidStream(t, processing)
		})
	}
}

func ftBrokerKilledMidStream(t *testing.T, processing runner.Guarantee) {
	b := newBrokerProc(t, "--group-min-session-timeout", "100ms")
	e := ftEnv(t, b, "in", "out")
	rng := rand.New(rand.NewPCG(7, 7))
	want := map[string]int64{}
	e.produceCounted("in", rng, 20_000, 300, want)

	log := stNewLog(t)
	cfg := e.config(t.TempDir(), log.logger("brokerdown"))
	cfg.HTTPAddr = "127.0.0.1:0"
	if processing == runner.ExactlyOnce {
		cfg.Processing, cfg.TransactionalID = runner.ExactlyOnce, "brokerdown-tx"
	}
	rn := stStart(t, stCountJob("brokerdown", ftThrottle(100*time.Microsecond)), cfg)
	metrics := ftMetricsURL(t, log)
	running := func() {
		if err, done := rn.result(0); done {
			t.Fatalf("the job stopped: %v", err)
		}
	}
	waitWithin(t, stWait, "the job to be mid-stream", func() bool {
		running()
		return stSum(e.ends("out")) >= 3000
	})
	if got := ftMetric(metrics, "samsa_brokers_reachable"); got != 1 {
		t.Fatalf("samsa_brokers_reachable is %v before the broker is killed, want 1", got)
	}

	b.kill()
	waitWithin(t, stWait, "the job to report the broker unreachable", func() bool {
		running()
		return ftMetric(metrics, "samsa_brokers_reachable") == 0
	})
	// The outage: longer than the session timeout (1s) and many commit
	// intervals (100ms). This sleep is the scenario, not a wait for a
	// condition.
	time.Sleep(3 * time.Second)
	running()
	if got := ftMetric(metrics, "samsa_brokers_reachable"); got != 0 {
		t.Errorf("samsa_brokers_reachable is %v while the broker is down, want 0", got)
	}

	b.start()
	// The rest of the input comes from a new producer. The broker (kfake)
	// keeps producers' sequence state in memory until a clean shutdown,
	// so after a SIGKILL the first producer's next writes can be taken
	// out of order and its retries appended twice: input the job would
	// rightly count twice (see connectors/embedded). A new producer ID
	// starts with no sequence to lose.
	ftEnv(t, b).produceCounted("in", rng, 10_000, 300, want)
	ftCheckInput(t, e, "in", want)
	waitWithin(t, 2*stWait, "the job to commit all its input after the broker's return", func() bool {
		running()
		return ftAllCommitted(e, "brokerdown", "in")
	})
	if got := ftMetric(metrics, "samsa_brokers_reachable"); got != 1 {
		t.Errorf("samsa_brokers_reachable is %v after the broker's return, want 1", got)
	}
	rn.stop(t, "after the outage")

	dups := ftCheckNoGaps(t, e.readAll("out"), want)
	if processing == runner.ExactlyOnce && dups > 0 {
		t.Errorf("%d duplicate outputs under exactly-once", dups)
	}
	t.Logf("%d duplicate outputs (%s)", dups, processing)
	e.checkChangelogAndOutput(t, "brokerdown", "out", want)
}

// A job asked to stop while the broker is down stops within its shutdown
// deadline instead of waiting for the broker, with an error that says
// what could not be done; what it processed but could not commit is
// processed again by the next run, so nothing is lost and the state is
// exact.
func TestBrokerDownAtShutdown(t *testing.T) {
	t.Parallel()
	b := newBrokerProc(t, "--group-min-session-timeout", "100ms")
	e := ftEnv(t, b, "in", "out")
	rng := rand.New(rand.NewPCG(8, 8))
	want := map[string]int64{}
	e.produceCounted("in", rng, 150_000, 20_000, want)

	log := stNewLog(t)
	dir := t.TempDir()
	cfg := e.config(dir, log.logger("downstop"))
	cfg.ShutdownTimeout = 2 * time.Second
	// No commit before the shutdown's: what the job processed is all
	// uncommitted when the broker dies (with frequent commits, a slow
	// machine could have committed everything it had fetched).
	cfg.CommitInterval = time.Hour
	rn := stStart(t, stCountJob("downstop", nil), cfg)
	waitWithin(t, stWait, "the job to be mid-stream", func() bool {
		if err, done := rn.result(0); done {
			t.Fatalf("the job stopped: %v", err)
		}
		return stSum(e.ends("out")) >= 10_000
	})
	b.kill()
	waitWithin(t, stWait, "the job to notice", func() bool {
		return len(log.find("cannot reach a broker; retrying with backoff until it is back (the instance reports not ready meanwhile)")) > 0
	})
	began := time.Now()
	rn.cancel()
	err, returned := rn.result(2 * stWait)
	if !returned {
		t.Fatalf("Run did not return within %s of being cancelled while the broker was down", 2*stWait)
	}
	t.Logf("Run returned %v after %s", err, time.Since(began).Round(time.Millisecond))
	if err == nil {
		t.Errorf("Run returned nil; want an error saying the last work could not be committed")
	}

	b.start()
	cfg.Logger = log.logger("downstop-2")
	stRunToEnd(t, stCountJob("downstop", nil), cfg)
	ftCheckNoGaps(t, e.readAll("out"), want)
	e.checkChangelogAndOutput(t, "downstop", "out", want)
}
