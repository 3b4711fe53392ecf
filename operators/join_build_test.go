package operators_test

import (
	"strings"
	"testing"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner/runnertest"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// TestJoinBuildChecks checks that Job.Build accepts joins whose inputs are
// partitioned alike and refuses, with errors naming the node and the
// cause, those whose inputs are not.
func TestJoinBuildChecks(t *testing.T) {
	join := func(l, r string) string { return l + r }
	otherString := serde.Funcs(func(s string) ([]byte, error) { return []byte(s), nil }, func(b []byte) (string, error) { return string(b), nil })
	tests := []struct {
		name  string
		build func(job *stream.Job)
		want  []string // substrings of the error; none: Build succeeds
	}{
		{
			name: "stream-table, keys unchanged through key-keeping operators",
			build: func(job *stream.Job) {
				views := stream.Input(job, "views", serde.String, serde.String)
				views = operators.Filter(operators.MapValues(views, strings.ToUpper), func(_, v string) bool { return v != "" })
				users := stream.TableInput(job, "users", serde.String, serde.String)
				stream.Output(operators.JoinTable(views, users, func(_, v, u string) string { return join(v, u) }), "out", serde.String, serde.String)
			},
		},
		{
			name: "stream-table after a repartition",
			build: func(job *stream.Job) {
				views := stream.Input(job, "views", serde.Bytes, serde.String)
				byUser := operators.KeyBy(views, "by-user", func(_ []byte, v string) string { return v }, serde.String, serde.String)
				users := stream.TableInput(job, "users", serde.String, serde.String)
				stream.Output(operators.JoinTable(byUser, users, func(_, v, u string) string { return join(v, u) }), "out", serde.String, serde.String)
			},
		},
		{
			name: "stream-table, the stream re-keyed without a repartition",
			build: func(job *stream.Job) {
				views := stream.Input(job, "views", serde.String, serde.String)
				rekeyed := operators.Map(views, func(_, v string) (string, string) { return v, v })
				users := stream.TableInput(job, "users", serde.String, serde.String)
				stream.Output(operators.JoinTable(rekeyed, users, func(_, v, u string) string { return join(v, u) }), "out", serde.String, serde.String)
			},
			want: []string{"join-table-", "left input", "map-1", "operators.KeyBy"},
		},
		{
			name: "stream-table, key serdes differ",
			build: func(job *stream.Job) {
				views := stream.Input(job, "views", serde.String, serde.String)
				users := stream.TableInput(job, "users", otherString, serde.String)
				stream.Output(operators.JoinTable(views, users, func(_, v, u string) string { return join(v, u) }), "out", serde.String, serde.String)
			},
			want: []string{"not encoded alike", `topic "views"`, `topic "users"`},
		},
		{
			name: "stream-stream, windows negative",
			build: func(job *stream.Job) {
				a := stream.Input(job, "a", serde.String, serde.String)
				b := stream.Input(job, "b", serde.String, serde.String)
				w := operators.JoinWindows{Before: -time.Second, After: time.Second}
				out := operators.Join(a, b, w, operators.Buffers("ab", serde.String, serde.String, serde.String), func(_, l, r string) string { return join(l, r) })
				stream.Output(out, "out", serde.String, serde.String)
			},
			want: []string{"join ab", "negative"},
		},
		{
			name: "table-table of an aggregation and a topic",
			build: func(job *stream.Job) {
				views := stream.Input(job, "views", serde.String, serde.String)
				counts := operators.Count(operators.GroupByKey(views, serde.String, serde.String), "counts")
				users := stream.TableInput(job, "users", serde.String, serde.String)
				res := operators.JoinTables(counts, users, "joined", func(_ string, n int64, u string) string { return u }, serde.String)
				stream.Output(res.ToStream(), "out", serde.String, serde.String)
			},
		},
		{
			name: "global table read as a stream too",
			build: func(job *stream.Job) {
				views := stream.Input(job, "views", serde.String, serde.String)
				pages := stream.GlobalTableInput(job, "views", serde.String, serde.String)
				out := operators.JoinGlobal(views, pages, func(k, _ string) string { return k }, func(_, v, p string) string { return join(v, p) })
				stream.Output(out, "out", serde.String, serde.String)
			},
			want: []string{`topic "views" is read both as a global table and by source-0`},
		},
		{
			name: "global table join after a re-key: no co-partitioning needed",
			build: func(job *stream.Job) {
				views := stream.Input(job, "views", serde.String, serde.String)
				rekeyed := operators.Map(views, func(_, v string) (string, string) { return v, v })
				pages := stream.GlobalTableInput(job, "pages", serde.String, serde.String)
				out := operators.JoinGlobal(rekeyed, pages, func(_, v string) string { return v }, func(_, v, p string) string { return join(v, p) })
				stream.Output(out, "out", serde.String, serde.String)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := stream.NewJob("build-check")
			tt.build(job)
			_, err := job.Build()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Build succeeded; want an error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Build error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestJoinPartitionCounts checks that a join's topics must have equal
// partition counts, and that a repartition topic feeding a join takes the
// partition count of the topic it is joined with.
func TestJoinPartitionCounts(t *testing.T) {
	build := func(rekey bool) *stream.Job {
		job := stream.NewJob("counts")
		views := stream.Input(job, "views", serde.String, serde.String)
		if rekey {
			views = operators.KeyBy(views, "by-user", func(_, v string) string { return v }, serde.String, serde.String)
		}
		users := stream.TableInput(job, "users", serde.String, serde.String)
		stream.Output(operators.JoinTable(views, users, func(_, v, u string) string { return v + u }), "out", serde.String, serde.String)
		return job
	}
	_, err := runnertest.New(build(false), runnertest.Partitions("views", 4), runnertest.Partitions("users", 3))
	if err == nil || !strings.Contains(err.Error(), "users=3") || !strings.Contains(err.Error(), "views=4") {
		t.Errorf("join of topics with 4 and 3 partitions: error %v, want one naming both counts", err)
	}

	d, err := runnertest.New(build(true), runnertest.Partitions("views", 4), runnertest.Partitions("users", 3))
	if err != nil {
		t.Fatalf("join of a repartitioned stream with a 3-partition table: %v", err)
	}
	defer d.Close()
	users := runnertest.NewInput(d, "users", serde.String, serde.String)
	views := runnertest.NewInput(d, "views", serde.String, serde.String)
	for _, u := range []string{"ann", "bob", "cy", "dee"} {
		if err := users.Pipe(u, strings.ToUpper(u)); err != nil {
			t.Fatal(err)
		}
		if err := views.Pipe("page-of-"+u, u); err != nil {
			t.Fatal(err)
		}
	}
	got, err := runnertest.NewOutput(d, "out", serde.String, serde.String).KeyValues()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Errorf("got %v, want each view joined with its user", got)
	}
	for _, kv := range got {
		if kv.Value != kv.Key+strings.ToUpper(kv.Key) {
			t.Errorf("user %s joined %q", kv.Key, kv.Value)
		}
	}
}

// TestWindowJoinSkippedRecord checks that a record whose processing fails
// and is skipped leaves no trace in a windowed join: here the failed
// record advanced the join's clock and emitted two unjoined records before
// failing, and its store writes were undone; the join must go on as if it
// had never been, and emit those two when the next record closes their
// windows.
func TestWindowJoinSkippedRecord(t *testing.T) {
	run := func(poison bool) []string {
		job := stream.NewJob("skip")
		left := stream.Input(job, "left", serde.String, serde.String)
		right := stream.Input(job, "right", serde.String, serde.String)
		joined := operators.LeftJoin(left, right, operators.JoinWithin(10*time.Millisecond),
			operators.Buffers("b", serde.String, serde.String, serde.String),
			func(_, l, r string, ok bool) string {
				if !ok {
					r = "-"
				}
				return l + "+" + r
			})
		checked := operators.Peek(joined, func(_, v string) {
			if strings.HasSuffix(v, "+POISON") {
				panic("poisoned")
			}
		})
		stream.Output(checked, "out", serde.String, serde.String)
		d, err := runnertest.New(job, runnertest.OnProcessError(stream.PolicySkip))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		l := runnertest.NewInput(d, "left", serde.String, serde.String)
		r := runnertest.NewInput(d, "right", serde.String, serde.String)
		at := func(ms int64) runnertest.RecordOption { return runnertest.At(time.UnixMilli(ms)) }
		for _, err := range []error{
			l.Pipe("a", "L1", at(100)),
			l.Pipe("b", "L2", at(105)),
			l.Pipe("p", "LP", at(108)),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		if poison {
			// Closes L1's and L2's windows (at 110 and 115), emits them,
			// joins LP, then fails.
			if err := r.Pipe("p", "POISON", at(116)); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Pipe("q", "Q", at(117)); err != nil {
			t.Fatal(err)
		}
		got, err := runnertest.NewOutput(d, "out", serde.String, serde.String).KeyValues()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range got {
			out = append(out, kv.Key+"="+kv.Value)
		}
		return out
	}
	want, got := run(false), run(true)
	if strings.Join(got, " ") != strings.Join(want, " ") || len(want) != 2 {
		t.Errorf("with a skipped record: %v; without it: %v (want a=L1+- b=L2+-)", got, want)
	}
}
