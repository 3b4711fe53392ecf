package runner_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Joins through the real runner on kfake: the merge of a task's input
// partitions by timestamp, windowed joins across a restart, and global
// tables.

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestJoinMergesInputsByTimestamp checks that a stream-table join sees the
// table as it was at each record's timestamp, however the broker delivers
// the two topics: the task merges its partitions of both by timestamp,
// waiting for a partition that is behind. The input is written before the
// job starts, the views before the profile updates, with interleaved
// timestamps; each view must find the profile version current at its time.
func TestJoinMergesInputsByTimestamp(t *testing.T) {
	// Three brokers, so the two topics' partitions have different leaders
	// and arrive in separate fetches.
	b := newBroker(t, kfake.NumBrokers(3), kfake.SeedTopics(2, "views", "profiles", "out"))
	const n = 300
	base := time.UnixMilli(1_700_000_000_000)
	var views, profiles []*kgo.Record
	for i := range n {
		user := fmt.Sprintf("user-%d", i%4)
		// Profile version i of a user at 10i ms, view i at 10i+5 ms: view
		// i must see version i.
		profiles = append(profiles, &kgo.Record{Topic: "profiles", Key: []byte(user), Value: fmt.Appendf(nil, "v%d", i), Timestamp: base.Add(time.Duration(10*i) * time.Millisecond)})
		views = append(views, &kgo.Record{Topic: "views", Key: []byte(user), Value: fmt.Appendf(nil, "view%d", i), Timestamp: base.Add(time.Duration(10*i+5) * time.Millisecond)})
	}
	b.produce(views...)
	b.produce(profiles...)

	job := stream.NewJob("merge-join")
	vs := stream.Input(job, "views", serde.String, serde.String)
	ps := stream.TableInput(job, "profiles", serde.String, serde.String)
	stream.Output(operators.LeftJoinTable(vs, ps, func(_, v, p string, ok bool) string {
		if !ok {
			p = "-"
		}
		return v + "+" + p
	}), "out", serde.String, serde.String)
	cfg := b.config()
	cfg.StateDir = t.TempDir()
	cfg.TaskHeader = true
	if err := runToEnd(t, job, cfg); err != nil {
		t.Fatal(err)
	}
	out := b.readAll("out")
	if len(out) != n {
		t.Fatalf("%d outputs, want %d", len(out), n)
	}
	for _, r := range out {
		var view, version int
		if _, err := fmt.Sscanf(string(r.Value), "view%d+v%d", &view, &version); err != nil || view != version {
			t.Errorf("%s/%d@%d: %q: view %d found profile version %d, want %d", r.Topic, r.Partition, r.Offset, r.Value, view, version, view)
		}
		if got, want := header(r, stream.TaskHeader), fmt.Sprintf("0_%d", r.Partition); got != want {
			t.Errorf("%s/%d@%d: header %s=%q, want %q", r.Topic, r.Partition, r.Offset, stream.TaskHeader, got, want)
		}
	}
}

// TestWindowJoinAcrossRestart runs a windowed left join in two runs, the
// second on a fresh state directory: the join's buffers and clock are
// restored from its changelog, so a left record left unjoined by the first
// run is emitted by the second once later records close its window, and
// a right record of the second run joins a left record of the first.
func TestWindowJoinAcrossRestart(t *testing.T) {
	b := newBroker(t, kfake.SeedTopics(1, "clicks", "buys", "out"))
	job := func() *stream.Job {
		job := stream.NewJob("window-join")
		clicks := stream.Input(job, "clicks", serde.String, serde.String)
		buys := stream.Input(job, "buys", serde.String, serde.String)
		joined := operators.LeftJoin(clicks, buys, operators.JoinWithin(time.Minute),
			operators.Buffers("click-buy", serde.String, serde.String, serde.String),
			func(_, c, b string, ok bool) string {
				if !ok {
					b = "-"
				}
				return c + "+" + b
			})
		stream.Output(joined, "out", serde.String, serde.String)
		return job
	}
	at := func(min int) time.Time {
		return time.UnixMilli(1_700_000_000_000).Add(time.Duration(min) * time.Minute)
	}
	rec := func(topic, key, value string, min int) *kgo.Record {
		return &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(value), Timestamp: at(min)}
	}
	b.produce(rec("clicks", "ann", "c1", 0), rec("clicks", "bob", "c2", 1), rec("buys", "ann", "b1", 0))
	cfg := b.config()
	cfg.StateDir = t.TempDir()
	if err := runToEnd(t, job(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := values(b.readAll("out")); got != "c1+b1" {
		t.Fatalf("first run wrote %q, want c1+b1", got)
	}

	// Second run, state from the changelog: bob's buy joins his click of
	// the first run; then a click at minute 5 closes the window of ann's
	// second click (minute 2 + 1) but not bob's click's (already joined).
	b.produce(rec("clicks", "ann", "c3", 2), rec("buys", "bob", "b2", 1), rec("clicks", "cy", "c4", 5))
	cfg.StateDir = t.TempDir()
	if err := runToEnd(t, job(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := values(b.readAll("out")); got != "c1+b1 c2+b2 c3+-" {
		t.Fatalf("after the second run: %q, want c1+b1 c2+b2 c3+-", got)
	}
}

func values(recs []*kgo.Record) string {
	var vs []string
	for _, r := range recs {
		vs = append(vs, string(r.Value))
	}
	return strings.Join(vs, " ")
}

// TestGlobalTable checks a global table through the runner: read in full
// before the first record is processed, from every partition of its
// topic whatever the stream's partitioning; kept up to date while the job
// runs; and, after a restart on the same state directory, read only from
// where the local copy left off.
func TestGlobalTable(t *testing.T) {
	b := newBroker(t, kfake.SeedTopics(3, "pages"), kfake.SeedTopics(2, "views", "out"))
	var pages []*kgo.Record
	for i := range 30 {
		pages = append(pages, &kgo.Record{Topic: "pages", Key: fmt.Appendf(nil, "/p%d", i), Value: fmt.Appendf(nil, "title%d", i)})
	}
	b.produce(pages...)
	var views []*kgo.Record
	for i := range 30 {
		views = append(views, &kgo.Record{Topic: "views", Key: fmt.Appendf(nil, "user%d", i), Value: fmt.Appendf(nil, "/p%d", i)})
	}
	b.produce(views...)

	job := func() *stream.Job {
		job := stream.NewJob("global-join")
		vs := stream.Input(job, "views", serde.String, serde.String)
		ps := stream.GlobalTableInput(job, "pages", serde.String, serde.String)
		out := operators.LeftJoinGlobal(vs, ps, func(_, page string) string { return page }, func(_, page, title string, ok bool) string {
			if !ok {
				title = "-"
			}
			return page + "=" + title
		})
		stream.Output(out, "out", serde.String, serde.String)
		return job
	}
	var logs syncBuffer
	cfg := b.config()
	cfg.StateDir = t.TempDir()
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	rn := start(t, job(), cfg)
	got := b.waitRecords("out", 30)
	for _, r := range got {
		var i, j int
		if _, err := fmt.Sscanf(string(r.Value), "/p%d=title%d", &i, &j); err != nil || i != j {
			t.Errorf("view joined as %q, want /pN=titleN", r.Value)
		}
	}

	// While the job runs: a page changes; views of it soon see the change.
	b.produce(&kgo.Record{Topic: "pages", Key: []byte("/p7"), Value: []byte("new-title")})
	sent := 0
	waitFor(t, "a view to see the page update", func() bool {
		var answers []string
		for _, r := range b.readAll("out") {
			if string(r.Key) == "probe" {
				answers = append(answers, string(r.Value))
			}
		}
		if len(answers) > 0 && answers[len(answers)-1] == "/p7=new-title" {
			return true
		}
		if len(answers) == sent { // answered with the old title: ask again
			b.produce(&kgo.Record{Topic: "views", Key: []byte("probe"), Value: []byte("/p7")})
			sent++
		}
		return false
	})
	if err := rn.stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "restored global tables: tables=pages records=30") {
		t.Errorf("first start: no log of restoring the 30 pages:\n%s", logs.String())
	}

	// A restart reads only the pages written since.
	b.produce(&kgo.Record{Topic: "pages", Key: []byte("/p8"), Value: []byte("newer")})
	logs.Reset()
	if err := runToEnd(t, job(), cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "restored global tables: tables=pages records=1") {
		t.Errorf("restart: no log of restoring just the new page:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}
