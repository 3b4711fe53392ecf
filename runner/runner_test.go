package runner_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// A clean run transforms every record once, keeps each key's records in
// order, and writes each output to its input's partition (same key, same
// murmur2 partition).
func TestRunTransformsAllInOrder(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	in := seqRecords("in", 0, 20_000, 97)
	b.produce(in...)

	if err := runToEnd(t, upperJob("upper", nil), b.config()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkUpper(t, in, b.readAll("out"), true)
}

// A second run starts from the first one's commit: it writes outputs for
// the records produced since, and for nothing else.
func TestRunResumesFromCommit(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	old := seqRecords("in", 0, 1000, 31)
	b.produce(old...)
	if err := runToEnd(t, upperJob("resume", nil), b.config()); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	firstEnds := b.ends("out")
	checkUpper(t, old, b.readAll("out"), true)

	added := seqRecords("in", 1000, 500, 31)
	b.produce(added...)
	if err := runToEnd(t, upperJob("resume", nil), b.config()); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	all := b.readAll("out")
	checkUpper(t, append(old, added...), all, true)
	var second []*kgo.Record
	for _, r := range all {
		if r.Offset >= firstEnds[r.Partition] {
			second = append(second, r)
		}
	}
	checkUpper(t, added, second, true)
}

// UntilEnd on input that is all processed returns at once, writing
// nothing.
func TestRunUntilEndWithNothingNew(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	in := seqRecords("in", 0, 100, 7)
	b.produce(in...)
	for i := range 2 {
		if err := runToEnd(t, upperJob("idle", nil), b.config()); err != nil {
			t.Fatalf("Run %d: %v", i+1, err)
		}
	}
	checkUpper(t, in, b.readAll("out"), true)

	// And on an empty input, from the start.
	b2 := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	if err := runToEnd(t, upperJob("empty", nil), b2.config()); err != nil {
		t.Fatalf("Run on empty input: %v", err)
	}
}

// Cancelling Run's context mid-stream is a clean shutdown: Run returns
// nil after committing what it processed, and the next run processes the
// rest, so every input has exactly one output.
func TestRunCleanShutdown(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	in := seqRecords("in", 0, 20_000, 97)
	b.produce(in...)

	// The 1000th record holds its task until Run's context is cancelled,
	// so the shutdown comes mid-stream.
	var seen atomic.Int64
	reached, cancelled := make(chan struct{}), make(chan struct{})
	hold := func(s stream.Stream[string, string]) stream.Stream[string, string] {
		return operators.Peek(s, func(string, string) {
			if seen.Add(1) == 1000 {
				close(reached)
				<-cancelled
			}
		})
	}
	rn := start(t, upperJob("shutdown", hold), b.config())
	select {
	case <-reached:
	case <-time.After(waitTimeout):
		t.Fatal("the job did not reach record 1000")
	}
	rn.cancel()
	close(cancelled)
	if err := rn.wait(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}

	first := b.readAll("out")
	if n := len(first); n == 0 || n >= len(in) || int64(n) != seen.Load() {
		t.Fatalf("first run wrote %d outputs for %d records processed, of %d; want all processed, some but not all", n, seen.Load(), len(in))
	}
	var committed int64
	for _, o := range b.committed("shutdown", "in") {
		committed += o
	}
	if committed != int64(len(first)) {
		t.Errorf("first run committed %d input offsets, processed %d", committed, len(first))
	}

	if err := runToEnd(t, upperJob("shutdown", nil), b.config()); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	checkUpper(t, in, b.readAll("out"), true)
}

// Two runners of one job share its tasks: the second takes half of them
// from the first, no task ever runs on both at once, and every record is
// processed.
func TestTwoRunnersSplitTasks(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	own := newOwnership()
	job := func(runner string) *stream.Job { return upperJob("split", own.tap(runner)) }

	first := start(t, job("a"), b.config())
	in := seqRecords("in", 0, 5000, 97)
	b.produce(in...)
	waitFor(t, "runner a to own all 4 tasks", func() bool { return own.owned("a") == 4 })

	second := start(t, job("b"), b.config())
	waitFor(t, "the tasks to split 2/2", func() bool { return own.owned("a") == 2 && own.owned("b") == 2 })
	more := seqRecords("in", 5000, 5000, 97)
	b.produce(more...)
	in = append(in, more...)

	b.waitCommitted("split", "in")
	checkUpper(t, in, b.readAll("out"), false)
	own.check(t)
	if len(own.partitions("b")) == 0 {
		t.Errorf("runner b processed no records")
	}
	t.Logf("partitions processed: runner a %v, runner b %v", own.partitions("a"), own.partitions("b"))

	for name, rn := range map[string]*running{"a": first, "b": second} {
		if err := rn.stop(); err != nil {
			t.Errorf("runner %s: Run = %v, want nil", name, err)
		}
	}
	own.check(t)
}

// A running job commits what it processed within about a commit interval,
// even when its input then goes quiet.
func TestRunCommitsWhileIdle(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	start(t, upperJob("idle", nil), b.config())
	in := seqRecords("in", 0, 100, 7)
	b.produce(in...)
	b.waitCommitted("idle", "in")
	checkUpper(t, in, b.readAll("out"), true)
}

// Run refuses to start, with one line saying what is wrong and where, if
// the brokers cannot be reached or the topics do not fit the job.
func TestRunStartupErrors(t *testing.T) {
	t.Parallel()
	joinJob := func() *stream.Job {
		job := stream.NewJob("join")
		left := stream.Input(job, "left", serde.String, serde.String)
		right := stream.Input(job, "right", serde.String, serde.String)
		stream.Output(operators.Merge(left, right), "out", serde.String, serde.String)
		return job
	}
	for _, tc := range []struct {
		name    string
		seed    []kfake.Opt // the cluster's topics; nil for no cluster
		brokers []string    // overrides the cluster's address
		job     *stream.Job
		want    []string
	}{{
		name: "missing input topic",
		seed: []kfake.Opt{kfake.SeedTopics(4, "out")},
		job:  upperJob("upper", nil),
		want: []string{"missing", `input topic "in"`},
	}, {
		name:    "unreachable broker",
		brokers: []string{"127.0.0.1:1"},
		job:     upperJob("upper", nil),
		want:    []string{"no broker reachable", "127.0.0.1:1"},
	}, {
		name: "input topics not co-partitioned",
		seed: []kfake.Opt{kfake.SeedTopics(4, "left", "out"), kfake.SeedTopics(3, "right")},
		job:  joinJob(),
		want: []string{"co-partitioned", "left=4", "right=3"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := runner.Config{Logger: testLogger(t)}
			if tc.seed != nil {
				cfg = newBroker(t, tc.seed...).config()
			}
			if tc.brokers != nil {
				cfg.Brokers = tc.brokers
			}
			cfg.ConnectTimeout = 2 * time.Second
			began := time.Now()
			err := runToEnd(t, tc.job, cfg)
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("Run took %s to fail", took)
			}
			checkMessage(t, "Run", err, tc.want...)
		})
	}
}

// A record that fails (does not deserialize, or makes a processor fail or
// panic) stops Run with an error naming it. Everything before it is
// committed, so a restart begins at that record, and fails there again.
func TestRunFailingRecord(t *testing.T) {
	t.Parallel()
	int64Job := func() *stream.Job {
		job := stream.NewJob("failing")
		in := stream.Input(job, "in", serde.String, serde.Int64)
		stream.Output(operators.MapValues(in, func(v int64) int64 { return 2 * v }), "out", serde.String, serde.Int64)
		return job
	}
	// failOn returns a job whose processor calls fail on the value bad.
	failOn := func(bad string, fail func() error) func() *stream.Job {
		return func() *stream.Job {
			return upperJob("failing", func(s stream.Stream[string, string]) stream.Stream[string, string] {
				return operators.Process(s, func(next stream.Processor[string, string]) stream.Processor[string, string] {
					return stream.ProcessorFunc[string, string](func(ctx stream.Context, r stream.Record[string, string]) error {
						if r.Value == bad {
							if err := fail(); err != nil {
								return err
							}
						}
						return next.Process(ctx, r)
					})
				})
			})
		}
	}
	texts := func(vs ...string) [][]byte {
		out := make([][]byte, len(vs))
		for i, v := range vs {
			out[i] = []byte(v)
		}
		return out
	}
	eight := func(v int64) []byte { b, _ := serde.Int64.Encode(v); return b }
	for _, tc := range []struct {
		name      string
		job       func() *stream.Job
		values    [][]byte
		failAt    int64
		want      []string // in the error's first line
		multiline bool     // the error carries a stack trace
	}{{
		name:   "value does not deserialize",
		job:    int64Job,
		values: [][]byte{eight(1), eight(2), eight(3), {1, 2, 3}, eight(5)},
		failAt: 3,
		want:   []string{"in/0@3", "deserialize value", "got 3"},
	}, {
		name:      "processor panics",
		job:       failOn("boom", func() error { panic("boom") }),
		values:    texts("a", "b", "boom", "c"),
		failAt:    2,
		want:      []string{"in/0@2", "panic: boom"},
		multiline: true,
	}, {
		name:   "processor returns an error",
		job:    failOn("bad", func() error { return errors.New("bad value") }),
		values: texts("bad", "a"),
		failAt: 0,
		want:   []string{"in/0@0", "bad value"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, kfake.SeedTopics(1, "in", "out"))
			for _, v := range tc.values {
				b.produce(&kgo.Record{Topic: "in", Key: []byte("k"), Value: v})
			}
			for run := 1; run <= 2; run++ {
				err := runToEnd(t, tc.job(), b.config())
				if err != nil && tc.multiline {
					err = errors.New(strings.SplitN(err.Error(), "\n", 2)[0])
				}
				checkMessage(t, fmt.Sprintf("run %d", run), err, tc.want...)
				if got := b.committed("failing", "in")[0]; got != tc.failAt {
					t.Errorf("after run %d: committed offset %d, want %d (the failing record's)", run, got, tc.failAt)
				}
				if got := len(b.readAll("out")); int64(got) != tc.failAt {
					t.Errorf("after run %d: %d outputs, want %d (one per record before the failing one)", run, got, tc.failAt)
				}
			}
		})
	}
}

// checkMessage checks that err is a one-line message holding every want.
func checkMessage(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want one mentioning %q", what, want)
	}
	msg := err.Error()
	t.Logf("%s: %s", what, msg)
	if strings.Contains(msg, "\n") {
		t.Errorf("%s: error is not one line:\n%s", what, msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: error %q does not mention %q", what, msg, w)
		}
	}
}

// A malformed command line exits 2 with one line on stderr naming the
// flag (or argument) at fault, before touching any broker.
func TestCommandUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "--commit-interval=abc"}, []string{"commit-interval", `"abc"`}},
		{[]string{"--threads=0"}, []string{"threads 0"}},
		{[]string{"run", "--log-level=loud"}, []string{"--log-level", `"loud"`}},
		{[]string{"run", "--no-such-flag"}, []string{"no-such-flag"}},
		{[]string{"run", "stray"}, []string{`unexpected argument "stray"`}},
		{[]string{"run", "--sasl-user=u"}, []string{"--sasl-user", "--sasl-mechanism"}},
		{[]string{"create-topics", "--partitions=0"}, []string{"--partitions"}},
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := command(t, upperJob("upper", nil), tc.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			checkMessage(t, "stderr", errors.New(strings.TrimSuffix(stderr, "\n")), tc.want...)
		})
	}
}

// command runs runner.Command with args and returns its exit code and
// outputs. It gives the command waitTimeout to finish.
func command(t *testing.T, job *stream.Job, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out, errOut strings.Builder
	code = runner.Command(ctx, job, args, &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("%q did not finish within %s", args, waitTimeout)
	}
	return code, out.String(), errOut.String()
}

// help documents every flag: its default, if it has one, and the
// environment variable that sets it. The flags this test knows must have
// the defaults it knows.
func TestCommandHelp(t *testing.T) {
	t.Parallel()
	const anyCount = "COUNT"
	defaults := map[string]string{ // flag -> its default as help shows it
		"brokers": "", "tls": "", "tls-ca": "", "tls-cert": "", "tls-key": "",
		"tls-server-name": "", "tls-insecure-skip-verify": "",
		"sasl-mechanism": "", "sasl-user": "", "sasl-password": "", "sasl-password-file": "",
		"embedded-listen":   "127.0.0.1:9092",
		"state-dir":         filepath.Join(os.TempDir(), "samsa", "upper"),
		"processing":        "at-least-once",
		"transactional-id":  "",
		"commit-interval":   "", // zero: the default depends on --processing, as the usage says
		"until-end":         "",
		"threads":           anyCount, // GOMAXPROCS at start-up, which go test -cpu changes later
		"session-timeout":   "45s",
		"connect-timeout":   "15s",
		"log-level":         "info",
		"log-json":          "",
		"http-addr":         "",
		"cache-bytes":       "67108864",
		"block-cache-bytes": "67108864",
		"memtable-bytes":    "16777216",
		// create-topics
		"partitions":         "4",
		"replication-factor": "-1",
	}
	code, stdout, stderr := command(t, upperJob("upper", nil), "help")
	if code != 0 || stderr != "" {
		t.Fatalf("help: exit code %d, stderr %q; want 0 and nothing", code, stderr)
	}

	// A flag's entry is "  --name [type]", its usage, and
	// "      env SAMSA_NAME[; default D]".
	envLines := map[string]string{}
	lines := strings.Split(stdout, "\n")
	for i, l := range lines {
		head, ok := strings.CutPrefix(l, "  --")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(head, " ")
		if i+2 >= len(lines) {
			t.Fatalf("help: entry of --%s is cut short", name)
		}
		env := strings.TrimSpace(lines[i+2])
		if prev, ok := envLines[name]; ok && prev != env {
			t.Errorf("help: --%s documented twice, differently: %q and %q", name, prev, env)
		}
		envLines[name] = env
	}
	for name, def := range defaults {
		env, ok := envLines[name]
		if !ok {
			t.Errorf("help does not document --%s", name)
			continue
		}
		want := "env SAMSA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		switch {
		case name == "sasl-password":
			want += "; no default, never printed"
		case def != "":
			want += "; default " + def
		}
		pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(want), anyCount, "[1-9][0-9]*") + "$"
		if !regexp.MustCompile(pattern).MatchString(env) {
			t.Errorf("help of --%s: %q, want %q", name, env, want)
		}
	}
	// Flags added since this test was written: at least the variable.
	for name, env := range envLines {
		want := "env SAMSA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if _, ok := defaults[name]; !ok && env != want && !strings.HasPrefix(env, want+"; default ") {
			t.Errorf("help of --%s: %q, want %q and its default, if any", name, env, want)
		}
	}
}

// Flags can come from SAMSA_* environment variables; the command line
// wins over them, and a bad value names its variable. (Command reads the
// process environment, so this test sets it, and cannot run in parallel.)
func TestCommandEnvironment(t *testing.T) {
	b := newBroker(t, kfake.SeedTopics(4, "in", "out"))
	in := seqRecords("in", 0, 500, 13)
	b.produce(in...)

	t.Setenv("SAMSA_BROKERS", b.addr)
	t.Setenv("SAMSA_UNTIL_END", "true")
	t.Setenv("SAMSA_SESSION_TIMEOUT", "1s")
	t.Setenv("SAMSA_LOG_LEVEL", "warn")
	t.Setenv("SAMSA_STATE_DIR", t.TempDir())
	t.Setenv("SAMSA_COMMIT_INTERVAL", "not a duration") // overridden below
	code, _, stderr := command(t, upperJob("env", nil), "run", "--commit-interval=100ms")
	if code != 0 {
		t.Fatalf("run: exit code %d, want 0; stderr:\n%s", code, stderr)
	}
	checkUpper(t, in, b.readAll("out"), true)

	t.Setenv("SAMSA_THREADS", "many")
	code, _, stderr = command(t, upperJob("env", nil), "run", "--commit-interval=100ms")
	if code != 2 {
		t.Errorf("run with SAMSA_THREADS=many: exit code %d, want 2", code)
	}
	checkMessage(t, "stderr", errors.New(strings.TrimSuffix(stderr, "\n")), "SAMSA_THREADS", `"many"`)
}

// The low-level Task API on a broker: one Task per partition reads
// partition p of both its co-partitioned inputs and emits every record to
// two outputs, one keyed (partitioned by key) and one unkeyed (the task's
// own partition, modulo the output's partition count).
func TestRunLowLevelTask(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(4, "left", "right", "keyed"), kfake.SeedTopics(2, "unkeyed"))
	var tasks atomic.Int64
	job := stream.NewJob("tasks")
	stream.AddTask(job, stream.TaskSpec{
		Name:    "copy",
		Inputs:  []string{"left", "right"},
		Outputs: []string{"keyed", "unkeyed"},
		New: func() stream.Task {
			tasks.Add(1)
			return taskFunc(func(ctx stream.Context, rec stream.RawRecord) error {
				// The value says which task saw which record.
				v := fmt.Appendf(nil, "%s/%d@%d by %s", rec.Topic, rec.Partition, rec.Offset, ctx.TaskID())
				if err := ctx.Emit("keyed", stream.RawRecord{Key: rec.Key, Value: v}); err != nil {
					return err
				}
				return ctx.Emit("unkeyed", stream.RawRecord{Value: v})
			})
		},
	})
	in := append(seqRecords("left", 0, 300, 11), seqRecords("right", 300, 300, 11)...)
	b.produce(in...)
	if err := runToEnd(t, job, b.config()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := tasks.Load(); n != 4 {
		t.Errorf("%d tasks created, want 4: one per partition of the co-partitioned inputs", n)
	}

	want := map[string]*kgo.Record{} // by the value the task writes for it
	for _, r := range in {
		want[fmt.Sprintf("%s/%d@%d by 0_%d", r.Topic, r.Partition, r.Offset, r.Partition)] = r
	}
	for _, out := range []struct {
		topic     string
		partition func(in *kgo.Record) int32
		key       func(in *kgo.Record) []byte
	}{
		{"keyed", func(in *kgo.Record) int32 { return in.Partition }, func(in *kgo.Record) []byte { return in.Key }},
		{"unkeyed", func(in *kgo.Record) int32 { return in.Partition % 2 }, func(*kgo.Record) []byte { return nil }},
	} {
		seen := map[string]bool{}
		for _, r := range b.readAll(out.topic) {
			v := string(r.Value)
			src, ok := want[v]
			switch {
			case !ok:
				t.Errorf("%s: unexpected record %q (a record processed by the wrong task?)", out.topic, v)
			case seen[v]:
				t.Errorf("%s: %q written twice", out.topic, v)
			case r.Partition != out.partition(src) || string(r.Key) != string(out.key(src)):
				t.Errorf("%s: %q has key %q in partition %d, want key %q in %d", out.topic, v, r.Key, r.Partition, out.key(src), out.partition(src))
			}
			seen[v] = true
		}
		if len(seen) != len(want) {
			t.Errorf("%s: %d of %d inputs written", out.topic, len(seen), len(want))
		}
	}
}

// taskFunc adapts a function to a stream.Task.
type taskFunc func(ctx stream.Context, rec stream.RawRecord) error

func (f taskFunc) Process(ctx stream.Context, rec stream.RawRecord) error { return f(ctx, rec) }
