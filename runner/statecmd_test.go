package runner_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// The state command reads a store from the local state directory while no
// instance uses it, and from a running instance over HTTP, with the
// store's formats (a string key, an int64 count) or as bytes.
func TestStateCommand(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	want := map[string]int64{}
	e.produceCounted("in", rand.New(rand.NewPCG(13, 1)), 1_000, 25, want)
	dir := t.TempDir()
	stRunToEnd(t, stCountJob("statecmd", nil), e.config(dir, stNewLog(t).logger("first")))
	job := func() *stream.Job { return stCountJob("statecmd", nil) }

	k := stKey(3)
	if code, out, errOut := command(t, job(), "state", "get", "counts", k, "--state-dir", dir); code != 0 || out != fmt.Sprintf("%d\n", want[k]) {
		t.Errorf("state get %s: exit %d, %q, %s; want %d", k, code, out, errOut, want[k])
	}
	wantScan := func(withTask bool) string {
		var sb strings.Builder
		for i := range 10 {
			k := stKey(i)
			if withTask {
				sb.WriteString("0_?\t")
			}
			fmt.Fprintf(&sb, "%s\t%d\n", k, want[k])
		}
		return sb.String()
	}
	if code, out, errOut := command(t, job(), "state", "--state-dir", dir, "scan", "counts", "key-00"); code != 0 || out != wantScan(false) {
		t.Errorf("state scan counts key-00: exit %d, %s\n%s\nwant\n%s", code, errOut, out, wantScan(false))
	}
	code, out, _ := command(t, job(), "state", "scan", "counts", "key-00", "--state-dir", dir, "--with-task")
	if masked := maskTasks(out); code != 0 || masked != wantScan(true) {
		t.Errorf("state scan --with-task: exit %d\n%s", code, out)
	}
	if code, out, _ := command(t, job(), "state", "scan", "counts", "--state-dir", dir, "--limit", "3"); code != 0 || strings.Count(out, "\n") != 3 {
		t.Errorf("state scan --limit 3: exit %d\n%s", code, out)
	}
	if code, out, _ := command(t, job(), "state", "get", "counts", k, "--state-dir", dir, "--raw"); code != 0 || out != fmt.Sprintf("%q\n", string(be64(want[k]))) {
		t.Errorf("state get --raw: exit %d, %q", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"get", "counts", "nosuchkey"}, 1, "store counts has no key nosuchkey"},
		{[]string{"get", "nosuch", "k"}, 2, `job statecmd has no store "nosuch" (its stores: counts)`},
		{[]string{"get", "counts"}, 2, "want `state get STORE KEY`"},
		{[]string{"scan", "counts", "--task", "9_9"}, 1, "no local store of task 9_9"},
	} {
		code, _, errOut := command(t, job(), append([]string{"state", "--state-dir", dir}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("state %q: exit %d, %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}

	// While an instance runs on the directory: refused, pointing at HTTP;
	// over HTTP, the same answers.
	log := stNewLog(t)
	cfg := e.config(dir, log.logger("second"))
	cfg.HTTPAddr = "127.0.0.1:0"
	rn := stStart(t, stCountJob("statecmd", nil), cfg)
	addr := strings.TrimPrefix(strings.TrimSuffix(ftMetricsURL(t, log), "/metrics"), "http://")
	waitFor(t, "the instance to be ready", func() bool { code, _ := hGet("http://" + addr + "/readyz"); return code == 200 })
	code, _, errOut := command(t, job(), "state", "get", "counts", k, "--state-dir", dir)
	if code != 1 || !strings.Contains(errOut, "in use by another instance") || !strings.Contains(errOut, "--http-addr") {
		t.Errorf("state get while running: exit %d, %q", code, errOut)
	}
	if code, out, errOut := command(t, job(), "state", "get", "counts", k, "--http-addr", addr); code != 0 || out != fmt.Sprintf("%d\n", want[k]) {
		t.Errorf("state get over HTTP: exit %d, %q, %s", code, out, errOut)
	}
	if code, out, errOut := command(t, job(), "state", "scan", "counts", "key-00", "--http-addr", addr); code != 0 || out != wantScan(false) {
		t.Errorf("state scan over HTTP: exit %d, %s\n%s", code, errOut, out)
	}
	if code, _, errOut := command(t, job(), "state", "get", "counts", "nosuchkey", "--http-addr", addr); code != 1 || !strings.Contains(errOut, "has no key nosuchkey (in the instance at "+addr+")") {
		t.Errorf("state get of a missing key over HTTP: exit %d, %q", code, errOut)
	}
	rn.stop(t, "second")
	if code, _, errOut := command(t, job(), "state", "get", "counts", k, "--http-addr", addr); code != 1 || !strings.Contains(errOut, "is the instance running") {
		t.Errorf("state get from a stopped instance: exit %d, %q", code, errOut)
	}
}

// An in-memory store is only in a running instance.
func TestStateCommandInMemory(t *testing.T) {
	t.Parallel()
	job := stream.NewJob("mem")
	stream.AddTask(job, stream.TaskSpec{Name: "t", Inputs: []string{"in"}, Stores: []stream.StoreSpec{{Name: "counts", InMemory: true}},
		New: func() stream.Task { return nil }})
	code, _, errOut := command(t, job, "state", "scan", "counts", "--state-dir", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "store counts is kept in memory") {
		t.Errorf("exit %d, %q", code, errOut)
	}
}

// maskTasks replaces the partition of the task column of each line with ?.
func maskTasks(out string) string {
	lines := strings.SplitAfter(out, "\n")
	for i, l := range lines {
		if task, rest, ok := strings.Cut(l, "\t"); ok && strings.HasPrefix(task, "0_") {
			lines[i] = "0_?\t" + rest
		}
	}
	return strings.Join(slices.DeleteFunc(lines, func(s string) bool { return s == "" }), "")
}

func be64(n int64) []byte {
	b, _ := serde.Int64.Encode(n)
	return b
}

// A global table's store is read like the others: the instance's, from
// <state-dir>/global or over HTTP.
func TestStateCommandGlobalTable(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "orders", "named", "customers")
	job := func() *stream.Job {
		job := stream.NewJob("globalstate")
		orders := stream.Input(job, "orders", serde.String, serde.String)
		customers := stream.GlobalTableInput(job, "customers", serde.String, serde.String)
		named := operators.JoinGlobal(orders, customers, func(_, id string) string { return id },
			func(_, _, name string) string { return name })
		stream.Output(named, "named", serde.String, serde.String)
		return job
	}
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	if err := e.cl.ProduceSync(ctx,
		&kgo.Record{Topic: "customers", Key: []byte("c1"), Value: []byte("Ann")},
		&kgo.Record{Topic: "customers", Key: []byte("c2"), Value: []byte("Bob")},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stRunToEnd(t, job(), e.config(dir, stNewLog(t).logger("first")))
	if code, out, errOut := command(t, job(), "state", "scan", "customers", "--state-dir", dir, "--with-task"); code != 0 || out != "global\tc1\tAnn\nglobal\tc2\tBob\n" {
		t.Errorf("state scan of a global table: exit %d, %q, %s", code, out, errOut)
	}

	log := stNewLog(t)
	cfg := e.config(dir, log.logger("second"))
	cfg.HTTPAddr = "127.0.0.1:0"
	rn := stStart(t, job(), cfg)
	addr := strings.TrimPrefix(strings.TrimSuffix(ftMetricsURL(t, log), "/metrics"), "http://")
	waitFor(t, "the instance to be ready", func() bool { code, _ := hGet("http://" + addr + "/readyz"); return code == 200 })
	if code, out, errOut := command(t, job(), "state", "get", "customers", "c2", "--http-addr", addr); code != 0 || out != "Bob\n" {
		t.Errorf("state get of a global table over HTTP: exit %d, %q, %s", code, out, errOut)
	}
	rn.stop(t, "second")
}
