package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/samsa-go/samsa/connectors/embedded"
)

// TestMain lets the test binary stand in for the command when the harness
// re-executes itself to run a variant.
func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(childMain(spec))
	}
	os.Exit(m.Run())
}

// TestRun runs every variant on a small input against an in-process
// broker, with a commit interval short enough to commit during the runs.
// The harness itself checks that each run committed the whole input and
// wrote one output record per input record; the test checks that it
// reported every run. It asserts nothing about speed.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and six child processes")
	}
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg, err := parseFlags([]string{
		"--brokers", b.Addr(),
		"--records", "20000", "--value-size", "20", "--keys", "100", "--partitions", "3",
		"--runs", "2", "--commit-interval", "1ms", "--variants", "baseline,samsa,consume",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	for _, want := range []string{
		"1    baseline", "1    samsa", "1    consume",
		"2    baseline", "2    samsa", "2    consume",
		"samsa/baseline: ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRunStateful runs the stateful workloads once each on a small input
// against an in-process broker. The harness checks the committed offsets,
// the output's running counts, the window counts and the records
// restored.
func TestRunStateful(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and child processes")
	}
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, workload := range []string{"count", "wordcount", "windowed", "restore"} {
		t.Run(workload, func(t *testing.T) {
			cfg, err := parseFlags([]string{
				"--brokers", b.Addr(), "--workload", workload,
				"--records", "5000", "--value-size", "20", "--keys", "300", "--partitions", "3",
				"--runs", "1", "--commit-interval", "1ms",
			}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var out bytes.Buffer
			if err := run(ctx, cfg, &out); err != nil {
				t.Fatalf("%v\noutput:\n%s", err, out.String())
			}
			t.Logf("output:\n%s", out.String())
			for _, want := range []string{"1    baseline", "1    samsa", "samsa/baseline: "} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{"--records", "0"},
		{"--runs", "-1"},
		{"--commit-interval", "0s"},
		{"--samsa-threads", "-1"},
		{"--variants", ""},
		{"--variants", "baseline,nope"},
		{"--workload", "nope"},
		{"--workload", "count", "--variants", "consume"},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error", args)
		}
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 999: "999", 1000: "1,000", 999_999.6: "1,000,000", 1_234_567: "1,234,567", -1234: "-1,234",
	} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}
