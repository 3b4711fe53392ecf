package runner_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/connectors/embedded"
)

// Without --brokers, status, replay and state work on the job's embedded
// broker data under --state-dir, as run does: a replay there resets the
// state the next run starts from.
func TestOperationsOnEmbeddedBroker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	flags := []string{"--state-dir", dir, "--embedded-listen", "127.0.0.1:0"}
	run := func(args ...string) string {
		t.Helper()
		if args[0] == "state" {
			args = append(args, "--state-dir", dir)
		} else {
			args = append(args, flags...)
		}
		code, out, errOut := command(t, stWordCountJob(), args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errOut)
		}
		return out
	}
	run("create-topics")

	// Input, written while no job runs.
	b, err := embedded.Start(embedded.Config{DataDir: filepath.Join(dir, "broker"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 200 {
		recs = append(recs, &kgo.Record{Topic: "lines", Value: fmt.Appendf(nil, "alpha beta w%c", 'a'+i%5)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	b.Close()

	run("run", "--until-end", "--commit-interval", "100ms")
	counts := run("state", "scan", "counts")
	if !strings.Contains(counts, "alpha\t200\n") || !strings.Contains(counts, "wa\t40\n") {
		t.Fatalf("state after the first run:\n%s", counts)
	}
	if out := run("status"); !strings.Contains(out, "No instance is running.") || !strings.Contains(out, "Total lag: 0 records.") {
		t.Errorf("status after the run:\n%s", out)
	}
	if out := run("replay", "--from", "earliest"); !strings.Contains(out, "processes 200 input records") {
		t.Errorf("replay:\n%s", out)
	}
	if out := run("status"); !strings.Contains(out, "Total lag: 200 records.") {
		t.Errorf("status after the replay:\n%s", out)
	}
	run("run", "--until-end", "--commit-interval", "100ms")
	if again := run("state", "scan", "counts"); again != counts {
		t.Errorf("state after the replay and a second run:\n%s\nwant the first run's:\n%s", again, counts)
	}
}
