package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// statusJSON is the part of `status --format json` the tests read.
type statusJSON struct {
	Job     string `json:"job"`
	State   string `json:"state"`
	Members []struct {
		ID       string   `json:"id"`
		ClientID string   `json:"client_id"`
		Tasks    []string `json:"tasks"`
	} `json:"members"`
	Partitions []struct {
		Topic       string     `json:"topic"`
		Partition   int32      `json:"partition"`
		Task        string     `json:"task"`
		Owner       string     `json:"owner"`
		Committed   int64      `json:"committed"`
		End         int64      `json:"end"`
		Lag         int64      `json:"lag"`
		CommittedAt *time.Time `json:"committed_at"`
	} `json:"partitions"`
	Lag int64 `json:"lag"`
}

// status runs the word count's status command against e.
func (e *stEnv) status(t *testing.T) statusJSON {
	t.Helper()
	st, err := e.tryStatus(t)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *stEnv) tryStatus(t *testing.T) (statusJSON, error) {
	t.Helper()
	var st statusJSON
	code, out, errOut := command(t, stWordCountJob(), "status", "--brokers", e.addr, "--format", "json")
	if code != 0 {
		return st, fmt.Errorf("status: exit %d: %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status --format json: %v\n%s", err, out)
	}
	return st, nil
}

// Status shows the members and the tasks each holds, lag per partition
// (falling to 0 as the job catches up) and how long ago each partition
// was committed; for a stopped job, the commits alone.
func TestStatus(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "lines", "word-counts")
	e.stProduceLines(t, rand.New(rand.NewPCG(9, 9)), 400)

	// Before the job ever ran: its repartition topic does not exist.
	if code, _, errOut := command(t, stWordCountJob(), "status", "--brokers", e.addr); code != 1 || !strings.Contains(errOut, "wordcount-words-repartition do not exist") {
		t.Errorf("status of a job that never ran: exit %d, %q", code, errOut)
	}

	cfg := e.config(t.TempDir(), stNewLog(t).logger("a"))
	a := stStart(t, stWordCountJob(), cfg)
	cfg.StateDir = t.TempDir()
	b := stStart(t, stWordCountJob(), cfg)
	var st statusJSON
	waitFor(t, "two members sharing the 8 tasks, caught up", func() bool {
		var err error
		if st, err = e.tryStatus(t); err != nil {
			return false // until the job has created its repartition topic
		}
		var tasks []string
		for _, m := range st.Members {
			tasks = append(tasks, m.Tasks...)
		}
		return len(st.Members) == 2 && len(tasks) == 8 && st.Lag == 0 && e.allCommitted("wordcount", "lines")
	})
	if st.State != "Stable" {
		t.Errorf("group state %q, want Stable", st.State)
	}
	var all []string
	for _, m := range st.Members {
		if m.ClientID != "samsa-wordcount" || len(m.Tasks) != 4 {
			t.Errorf("member %s (client %s) holds %v; want 4 tasks", m.ID, m.ClientID, m.Tasks)
		}
		all = append(all, m.Tasks...)
	}
	slices.Sort(all)
	if want := []string{"0_0", "0_1", "0_2", "0_3", "1_0", "1_1", "1_2", "1_3"}; !slices.Equal(all, want) {
		t.Errorf("tasks held: %v, want %v", all, want)
	}
	if len(st.Partitions) != 8 {
		t.Fatalf("%d partitions, want 4 of lines and 4 of the repartition topic", len(st.Partitions))
	}
	for _, p := range st.Partitions {
		if p.End == 0 {
			continue // no word went there: never committed
		}
		if p.Owner == "" || p.Committed != p.End || p.Lag != 0 || p.CommittedAt == nil || time.Since(*p.CommittedAt) > time.Minute {
			t.Errorf("partition %s/%d (task %s): owner %q, committed %d of %d, lag %d, committed at %v",
				p.Topic, p.Partition, p.Task, p.Owner, p.Committed, p.End, p.Lag, p.CommittedAt)
		}
	}

	// The text form says the same.
	code, out, errOut := command(t, stWordCountJob(), "status", "--brokers", e.addr)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	for _, s := range []string{"Job wordcount on " + e.addr + ": group Stable, 2 members.", "samsa-wordcount", "LAST COMMIT", " ago", "Total lag: 0 records."} {
		if !strings.Contains(out, s) {
			t.Errorf("status lacks %q:\n%s", s, out)
		}
	}

	a.stop(t, "a")
	b.stop(t, "b")
	waitFor(t, "the group to empty", func() bool { return e.groupEmpty("wordcount") })
	e.stProduceLines(t, rand.New(rand.NewPCG(9, 10)), 100)
	st = e.status(t)
	if len(st.Members) != 0 || st.Lag != 100 {
		t.Errorf("stopped job after 100 more lines: %d members, lag %d; want none and 100", len(st.Members), st.Lag)
	}
	if code, out, _ := command(t, stWordCountJob(), "status", "--brokers", e.addr); code != 0 || !strings.Contains(out, "No instance is running.") || !strings.Contains(out, "Total lag: 100 records.") {
		t.Errorf("status of the stopped job: exit %d:\n%s", code, out)
	}
}

// stProduceLines writes n lines of words for the word count.
func (e *stEnv) stProduceLines(t *testing.T, rng *rand.Rand, n int) {
	t.Helper()
	var recs []*kgo.Record
	for i := range n {
		var words []string
		for range 1 + rng.IntN(6) {
			w := rng.IntN(200)
			words = append(words, fmt.Sprintf("w%c%c", 'a'+w%26, 'a'+w/26))
		}
		recs = append(recs, &kgo.Record{Topic: "lines", Key: fmt.Appendf(nil, "l%d", i), Value: []byte(strings.Join(words, " "))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce lines: %v", err)
	}
}
