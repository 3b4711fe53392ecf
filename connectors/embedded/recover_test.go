package embedded_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/connectors/embedded"
)

// A broker that dies with a transaction open comes back with the
// transaction aborted, its producer's earlier and later transactions
// readable.
// The crash is a copy of the data directory taken while the transaction
// is open (what a SIGKILL leaves: no clean stop); kfake alone would write
// no abort marker, and a read_committed reader would then skip every
// later record of that producer.
func TestTransactionOpenAtCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := t.TempDir()
	a, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: live})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	produce := func(addr string, commit bool, values ...string) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID("tx"), kgo.DefaultProduceTopic("t"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
		}
		if commit {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := kadm.NewClient(adm).CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	produce(a.Addr(), true, "committed-0")
	produce(a.Addr(), false, "aborted-1", "aborted-2") // left open

	crashed := filepath.Join(t.TempDir(), "data")
	if err := os.CopyFS(crashed, os.DirFS(live)); err != nil {
		t.Fatal(err)
	}
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: crashed})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	produce(b.Addr(), true, "committed-1", "committed-2")

	want := "[committed-0 committed-1 committed-2]"
	if got := readCommitted(ctx, t, b.Addr()); fmt.Sprint(got) != want {
		t.Errorf("read_committed after the crash: %q, want %s", got, want)
	}

	// A crash with no transaction open: the log ends with a commit
	// marker. Nothing to repair, and the start does not wait for it.
	crashed2 := filepath.Join(t.TempDir(), "data")
	if err := os.CopyFS(crashed2, os.DirFS(crashed)); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	c, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: crashed2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("the start after the second crash took %s", took)
	}
	if got := readCommitted(ctx, t, c.Addr()); fmt.Sprint(got) != want {
		t.Errorf("read_committed after the second crash: %q, want %s", got, want)
	}
}

// readCommitted returns the values of topic t's partition 0, read_committed.
func readCommitted(ctx context.Context, t *testing.T, addr string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"t": {0: kgo.NewOffset().AtStart()}}),
		kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup("t", 0)
	var got []string
	for next := int64(0); next < end.Offset; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read t/0 up to %d of %d: read_committed holds %q so far", next, end.Offset, got)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				got = append(got, string(r.Value))
			}
			next = r.Offset + 1
		})
	}
	return got
}
