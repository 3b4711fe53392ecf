package runner

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/stream"
)

func TestLogLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := logLimiter{every: 30 * time.Second, now: func() time.Time { return now }}
	type step struct {
		advance time.Duration
		kind    string
		ok      bool
		held    int64
	}
	for i, s := range []step{
		{0, "a", true, 0}, // the first of a kind at once
		{0, "b", true, 0}, // kinds are separate
		{time.Second, "a", false, 0},
		{time.Second, "a", false, 0},
		{28 * time.Second, "a", true, 2}, // 30s after the last line: the count held back
		{time.Second, "a", false, 0},
		{time.Hour, "a", true, 1},
		{0, "a", false, 0},
		{0, "b", true, 0}, // long after its last line
	} {
		now = now.Add(s.advance)
		ok, held := l.allow(s.kind)
		if ok != s.ok || held != s.held {
			t.Errorf("step %d (%s): allow = %v, %d; want %v, %d", i, s.kind, ok, held, s.ok, s.held)
		}
	}
}

// Every bad record is counted; the log gets the first, then one line per
// interval with the number held back.
func TestBadRecordsReport(t *testing.T) {
	var logged strings.Builder
	now := time.Unix(0, 0)
	reg := prometheus.NewRegistry()
	b := &badRecords{
		log:      hclog.New(&hclog.LoggerOptions{Output: &logged, Level: hclog.Info}),
		dlqTopic: "j-dlq",
		counted:  registerCounter(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bad"}, []string{"kind", "policy"})),
		dropped:  registerCounter(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped"}, []string{"reason"})),
		logs:     logLimiter{every: time.Minute, now: func() time.Time { return now }},
	}
	rec := stream.RawRecord{Topic: "in", Partition: 3, Offset: 42, Key: []byte("secret key"), Value: []byte("secret value")}
	for range 5 {
		b.badRecord(engine.BadRecord{Kind: stream.KindDeserialize, Policy: stream.PolicySkip, Record: rec, Err: errors.New("bad bytes")})
	}
	b.badRecord(engine.BadRecord{Kind: stream.KindProcess, Policy: stream.PolicyDeadLetter, Record: rec,
		Err: &stream.ProcessError{Topic: "in", Err: &stream.PanicError{Value: "oops", Stack: []byte("goroutine 1 [running]:")}}})
	now = now.Add(time.Minute)
	b.badRecord(engine.BadRecord{Kind: stream.KindDeserialize, Policy: stream.PolicySkip, Record: rec, Err: errors.New("bad bytes")})
	for range 3 {
		b.droppedRecord(engine.Dropped{Reason: "null key", Topic: "in", Partition: 1, Offset: 7})
	}

	if n := counterValue(t, b.counted.WithLabelValues("deserialize", "skip")); n != 6 {
		t.Errorf("deserialize/skip counted %v, want 6", n)
	}
	if n := counterValue(t, b.counted.WithLabelValues("process", "dlq")); n != 1 {
		t.Errorf("process/dlq counted %v, want 1", n)
	}
	if n := counterValue(t, b.dropped.WithLabelValues("null key")); n != 3 {
		t.Errorf("null key drops counted %v, want 3", n)
	}
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	var got []string
	for _, l := range lines {
		if !strings.HasPrefix(l, " ") && l != "" { // a stack continues the line before
			got = append(got, l)
		}
	}
	want := []string{
		"skipped a record that failed to deserialize: task=0_0 topic=in partition=3 offset=42",
		"dead-lettered a record that failed to process",
		"skipped a record that failed to deserialize: task=0_0 topic=in partition=3 offset=42 error=\"bad bytes\" more_since_last_logged=4",
		"dropped a record: reason=\"null key\"",
	}
	if len(got) != len(want) {
		t.Fatalf("%d log lines, want %d:\n%s", len(got), len(want), logged.String())
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("log line %d:\n%s\nwant it to contain %q", i, got[i], w)
		}
	}
	if !strings.Contains(logged.String(), "goroutine 1 [running]") {
		t.Errorf("the panic's stack is not logged:\n%s", logged.String())
	}
	// The log names records; it never prints their contents.
	if strings.Contains(logged.String(), "secret") {
		t.Errorf("the log shows a record's key or value:\n%s", logged.String())
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
