package runner_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with the output of the code")

// describeJob is a job with every kind of box a description draws: a
// repartition topic between two sub-topologies, a Pebble store with a
// changelog, an in-memory store, a table read from a topic, and a global
// table.
func describeJob() *stream.Job {
	job := stream.NewJob("shop")
	orders := stream.Input(job, "orders", serde.String, serde.String)
	byCustomer := operators.GroupBy(orders, "by-customer", func(_ string, v string) string { return v }, serde.String, serde.String)
	counts := operators.Count(byCustomer, "order-counts")
	stream.Output(counts.ToStream(), "order-counts-out", serde.String, serde.Int64)
	prices := stream.TableInput(job, "prices", serde.String, serde.Int64)
	stream.Output(prices.ToStream(), "price-feed", serde.String, serde.Int64)
	customers := stream.GlobalTableInput(job, "customers", serde.String, serde.String)
	named := operators.JoinGlobal(counts.ToStream(), customers, func(k string, _ int64) string { return k },
		func(_ string, n int64, name string) string { return fmt.Sprint(name, n) })
	stream.Output(named, "named-counts", serde.String, serde.String)
	stream.AddTask(job, stream.TaskSpec{
		Name: "dedupe", Inputs: []string{"clicks"}, Outputs: []string{"clicks-unique"},
		Stores: []stream.StoreSpec{{Name: "seen", InMemory: true}},
		New:    func() stream.Task { return nil },
	})
	return job
}

// golden compares got with testdata/<name>, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s: output differs from the golden file (run with -update if the change is right)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestDescribeFormats(t *testing.T) {
	t.Parallel()
	b := newBroker(t, kfake.SeedTopics(3, "orders", "order-counts-out", "prices", "price-feed", "clicks", "clicks-unique", "customers", "named-counts"))
	for _, format := range []string{"text", "mermaid", "dot"} {
		t.Run(format, func(t *testing.T) {
			code, out, errOut := command(t, describeJob(), "describe", "--format", format, "--brokers", b.addr)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden(t, "describe/shop."+format, out)
			if format == "dot" {
				checkDot(t, out)
			}
		})
	}
	t.Run("offline", func(t *testing.T) {
		code, out, errOut := command(t, describeJob(), "describe", "--offline")
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		golden(t, "describe/shop-offline.text", out)
	})
}

// Without --offline and without a broker, describe still describes, and
// says why it has no partition counts.
func TestDescribeWithoutBroker(t *testing.T) {
	t.Parallel()
	code, out, errOut := command(t, describeJob(), "describe", "--embedded-listen", "127.0.0.1:1", "--format", "mermaid")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "flowchart LR\n") || strings.Contains(out, "partitions") {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(errOut, "no partition counts") || !strings.Contains(errOut, "127.0.0.1:1") || !strings.Contains(errOut, "--offline") {
		t.Errorf("stderr does not say why partition counts are missing: %q", errOut)
	}
	if code, _, errOut := command(t, describeJob(), "describe", "--format", "svg"); code != 2 || !strings.Contains(errOut, "--format") {
		t.Errorf("--format svg: exit %d, %q", code, errOut)
	}
}

// checkDot has Graphviz parse a DOT description, if it is installed
// (Debian package graphviz).
func checkDot(t *testing.T, src string) {
	t.Helper()
	dot, err := exec.LookPath("dot")
	if err != nil {
		t.Log("graphviz (dot) not installed: DOT syntax not checked")
		return
	}
	cmd := exec.Command(dot, "-Tsvg", "-o", os.DevNull)
	cmd.Stdin = strings.NewReader(src)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("dot rejects the description: %v\n%s", err, out)
	}
}
