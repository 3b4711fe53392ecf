package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A small run of the fault suite under each guarantee: instances killed
// and restarted, the broker killed and restarted, an instance added and
// one stopped, then the output and the state checked against the input.
// RELIABILITY.md has the figures of full runs.
func TestChaosSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a broker and job instances as child processes; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	samsaBin, jobBin, err := buildBinaries(ctx, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, processing := range []string{exactlyOnce, atLeastOnce} {
		t.Run(processing, func(t *testing.T) {
			cfg := config{
				processing:     processing,
				records:        20_000,
				seed:           7,
				instances:      2,
				kills:          2,
				brokerRestarts: 1,
				rebalances:     2,
				keys:           200,
				partitions:     4,
				rate:           10_000,
				timeout:        2 * time.Minute,
				sessionTimeout: time.Second,
				commitInterval: 100 * time.Millisecond,
				workDir:        filepath.Join(t.TempDir(), "work"),
				samsaBin:       samsaBin,
				jobBin:         jobBin,
			}
			var out bytes.Buffer
			res, err := chaos(ctx, cfg, &out)
			res.print(&out)
			t.Log("\n" + out.String())
			if err != nil {
				t.Fatalf("the run did not finish: %v", err)
			}
			for _, a := range res.anomalies {
				t.Errorf("anomaly: %s", a)
			}
			if res.kills != 2 || res.brokerRestarts != 1 || res.added+res.stopped != 2 {
				t.Errorf("faults: %d kills, %d broker restarts, %d instances added and %d stopped; want 2, 1 and 2 in all",
					res.kills, res.brokerRestarts, res.added, res.stopped)
			}
			if res.inLog < cfg.records || res.keys != cfg.keys {
				t.Errorf("the input holds %d records of %d keys; want at least %d of %d", res.inLog, res.keys, cfg.records, cfg.keys)
			}
			if res.stateWrong != 0 || res.lost != 0 || (processing == exactlyOnce && res.dups != 0) {
				t.Errorf("state wrong for %d keys, %d lost, %d duplicates", res.stateWrong, res.lost, res.dups)
			}
			if !strings.Contains(out.String(), "result: OK") {
				t.Errorf("the table does not end with result: OK")
			}
		})
	}
}
