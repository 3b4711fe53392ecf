package runner

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

type lines []string

func (l *lines) Info(msg string, kv ...any) {
	*l = append(*l, strings.TrimSuffix(fmt.Sprintln(append([]any{msg}, kv...)...), "\n"))
}

// The catch-up log: a line when an instance falls far behind, one every
// catchUpLogEvery with the rate and the time left, one when it caught up.
func TestCatchUpLog(t *testing.T) {
	var c catchUp
	var log lines
	t0 := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	view := func(lag int64) *instanceView {
		return &instanceView{Lag: lag, Tasks: []taskView{{ID: "0_0", Inputs: []inputView{
			{Topic: "in", Partition: 0, Lag: lag * 3 / 4}, {Topic: "in", Partition: 1, Lag: lag - lag*3/4},
		}}}}
	}
	// 100,000 behind, processing 2,000 records a second of which 1,000
	// are backlog (the input grows by 1,000 a second).
	lag, in := int64(100_000), int64(0)
	for s := 0; lag >= 0; s++ {
		c.observe(&log, t0.Add(time.Duration(s)*time.Second), view(lag), in)
		lag -= 1000
		in += 2000
	}
	want := []string{
		"catching up lag 100000 partitions_behind 2 most_behind in/0=75000,in/1=25000 rate unknown left unknown",
		"catching up lag 90000 partitions_behind 2 most_behind in/0=67500,in/1=22500 rate 2000/s left 1m30s",
	}
	if len(log) < 3 {
		t.Fatalf("log: %q", log)
	}
	for i, w := range want {
		if log[i] != w {
			t.Errorf("line %d: %q\nwant      %q", i, log[i], w)
		}
	}
	if last := log[len(log)-1]; !strings.HasPrefix(last, "caught up lag 0") || !strings.Contains(last, "took 1m40s") {
		t.Errorf("last line: %q", last)
	}
	if n := len(log); n != 11 { // at 0s, every 10s until 90s, caught up at 100s (under 1,000 left)
		t.Errorf("%d lines, want 11: %q", n, log)
	}

	// A lag that does not shrink says so.
	c, log = catchUp{}, nil
	for s := range 12 {
		c.observe(&log, t0.Add(time.Duration(s)*time.Second), view(50_000), int64(s)*500)
	}
	if len(log) != 2 || !strings.Contains(log[1], "left not shrinking") {
		t.Errorf("a steady lag: %q", log)
	}
}
