package runner_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// hGet returns the status code and body of url, or -1 if it cannot be
// read.
func hGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hJSON reads url as JSON into v, failing the test unless it answers 200.
func hJSON(t *testing.T, url string, v any) {
	t.Helper()
	code, body := hGet(url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

// viewJSON is the part of /status the tests read.
type viewJSON struct {
	Job      string `json:"job"`
	MemberID string `json:"member_id"`
	State    string `json:"state"`
	Lag      int64  `json:"lag"`
	Tasks    []struct {
		ID     string `json:"id"`
		State  string `json:"state"`
		Inputs []struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			Position  int64  `json:"position"`
			End       int64  `json:"end"`
			Lag       int64  `json:"lag"`
		} `json:"inputs"`
		Stores []struct {
			Name      string `json:"name"`
			Changelog string `json:"changelog"`
			Offset    int64  `json:"offset"`
			Bytes     int64  `json:"bytes"`
		} `json:"stores"`
	} `json:"tasks"`
}

// stateJSON is the body of /state.
type stateJSON struct {
	Store   string `json:"store"`
	Entries []struct {
		Task       string `json:"task"`
		Key        string `json:"key"`
		Value      string `json:"value"`
		KeyBytes   []byte `json:"key_bytes"`
		ValueBytes []byte `json:"value_bytes"`
	} `json:"entries"`
	Truncated bool     `json:"truncated"`
	Tasks     []string `json:"tasks"`
}

// The HTTP endpoint of a running stateful job: health, readiness, the JSON
// view of its tasks, lag and stores, reads of its store, and the metrics
// the operations issue lists.
func TestHTTPEndpoint(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	want := map[string]int64{}
	e.produceCounted("in", rand.New(rand.NewPCG(11, 1)), 2_000, 30, want)
	log := stNewLog(t)
	cfg := e.config(t.TempDir(), log.logger("http"))
	cfg.HTTPAddr = "127.0.0.1:0"
	rn := stStart(t, stCountJob("http", nil), cfg)
	base := strings.TrimSuffix(ftMetricsURL(t, log), "/metrics")

	if code, body := hGet(base + "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	waitFor(t, "the job to be ready", func() bool { code, _ := hGet(base + "/readyz"); return code == 200 })
	var v viewJSON
	// The view is published every so often: wait for one made after the
	// last commit applied the changes to the stores.
	waitFor(t, "the view to show everything processed and committed", func() bool {
		hJSON(t, base+"/status", &v)
		if !e.allCommitted("http", "in") || v.Lag != 0 || len(v.Tasks) != stPartitions || v.Tasks[0].Inputs[0].End < 0 {
			return false
		}
		changelogEnds := e.ends("http-counts-changelog")
		for i, task := range v.Tasks {
			if len(task.Stores) == 0 || task.Stores[0].Offset != changelogEnds[int32(i)] {
				return false
			}
		}
		return true
	})
	if v.Job != "http" || v.State != "running" || v.MemberID == "" {
		t.Errorf("/status: job %q, state %q, member %q", v.Job, v.State, v.MemberID)
	}
	ends := e.ends("in")
	changelogEnds := e.ends("http-counts-changelog")
	for i, task := range v.Tasks {
		p := int32(i)
		in := task.Inputs[0]
		if task.ID != fmt.Sprintf("0_%d", i) || task.State != "running" || in.Topic != "in" || in.Partition != p || in.Position != ends[p] || in.End != ends[p] || in.Lag != 0 {
			t.Errorf("/status task %d: %+v", i, task)
		}
		if len(task.Stores) != 1 || task.Stores[0].Name != "counts" || task.Stores[0].Changelog != "http-counts-changelog" ||
			task.Stores[0].Offset != changelogEnds[p] || task.Stores[0].Bytes < 0 {
			t.Errorf("/status task %d stores: %+v (changelog end %d)", i, task.Stores, changelogEnds[p])
		}
	}

	// One key, with the store's formats (a string key, an int64 count).
	var st stateJSON
	hJSON(t, base+"/state/counts?key="+stKey(7), &st)
	if len(st.Entries) != 1 || st.Entries[0].Key != stKey(7) || st.Entries[0].Value != fmt.Sprint(want[stKey(7)]) || len(st.Entries[0].ValueBytes) != 8 {
		t.Errorf("/state/counts?key=%s: %+v, want the count %d", stKey(7), st, want[stKey(7)])
	}
	hJSON(t, base+"/state/counts?key=nosuchkey", &st)
	if len(st.Entries) != 0 || len(st.Tasks) != stPartitions {
		t.Errorf("/state of a missing key: %+v", st)
	}
	// A prefix, across the tasks; a limit.
	hJSON(t, base+"/state/counts?prefix=key-00", &st)
	got := map[string]string{}
	for _, en := range st.Entries {
		got[en.Key] = en.Value
	}
	for i := range 10 {
		if k := stKey(i); got[k] != fmt.Sprint(want[k]) {
			t.Errorf("/state?prefix=key-00: %s = %q, want %d", k, got[k], want[k])
		}
	}
	if len(got) != 10 {
		t.Errorf("/state?prefix=key-00: %d keys, want 10", len(got))
	}
	hJSON(t, base+"/state/counts?limit=5", &st)
	if len(st.Entries) != 5 || !st.Truncated {
		t.Errorf("/state?limit=5: %d entries, truncated %v", len(st.Entries), st.Truncated)
	}
	for url, wantCode := range map[string]int{
		"/state/nosuch":                404,
		"/state/counts?limit=0":        400,
		"/state/counts?key=a&prefix=b": 400,
	} {
		if code, body := hGet(base + url); code != wantCode || !strings.Contains(body, `"error"`) {
			t.Errorf("GET %s: %d %s, want %d with an error", url, code, body, wantCode)
		}
	}

	// The metrics of the issue.
	metrics := base + "/metrics"
	for _, name := range []string{
		`samsa_records_in_total{job="http",task="0_1",topic="in"}`,
		`samsa_records_out_total{job="http",task="0_1",topic="out"}`,
		`samsa_records_out_total{job="http",task="0_1",topic="http-counts-changelog"}`,
		`samsa_process_seconds_count`, `samsa_commit_seconds_count`,
		`samsa_consumer_lag_records{job="http",partition="2",topic="in"}`,
		`samsa_restore_remaining_records{job="http",store="counts",task="0_3"}`,
		`samsa_store_bytes{job="http",store="counts",task="0_0"}`,
		`samsa_rebalances_total`, `samsa_tasks`,
	} {
		if got := ftMetric(metrics, name); got < 0 {
			t.Errorf("%s: no such metric", name)
		}
	}
	if got := ftMetric(metrics, "samsa_records_in_total"); got != 2_000 {
		t.Errorf("samsa_records_in_total sums to %v, want 2000", got)
	}
	if got := ftMetric(metrics, "samsa_tasks"); got != stPartitions {
		t.Errorf("samsa_tasks = %v", got)
	}
	rn.stop(t, "http")
}

// While a job catches up on a backlog, its lag per partition falls to 0,
// and it logs its progress: lag, rate, time left; then that it caught up.
func TestCatchUpProgress(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	e.produceCounted("in", rand.New(rand.NewPCG(12, 1)), 40_000, 100, map[string]int64{})
	log := stNewLog(t)
	cfg := e.config(t.TempDir(), log.logger("catchup"))
	cfg.HTTPAddr = "127.0.0.1:0"
	// About 2s of work, in polls of up to 10,000 records: long enough to
	// watch.
	rn := stStart(t, upperJob("catchup", ftThrottle(50*time.Microsecond)), cfg)
	base := strings.TrimSuffix(ftMetricsURL(t, log), "/metrics")
	var lags []int64
	waitFor(t, "the lag to fall to 0", func() bool {
		var v viewJSON
		hJSON(t, base+"/status", &v)
		if len(lags) == 0 || lags[len(lags)-1] != v.Lag {
			lags = append(lags, v.Lag)
		}
		return e.allCommitted("catchup", "in") && v.Lag == 0
	})
	falling := 0
	for i := 1; i < len(lags); i++ {
		if lags[i] < lags[i-1] {
			falling++
		}
	}
	if falling < 3 {
		t.Errorf("the lag went %v: want it seen falling a few times", lags)
	}
	waitFor(t, "the caught-up log line", func() bool { return len(log.find("caught up")) > 0 })
	progress := log.find("catching up")
	if len(progress) == 0 {
		t.Fatal("no catching-up log line")
	}
	first := progress[0]
	if first.int("lag") < 10_000 || first.int("partitions_behind") < 1 || !strings.Contains(fmt.Sprint(first["most_behind"]), "in/") {
		t.Errorf("catching up: %v", first)
	}
	for _, f := range []string{"rate", "left"} {
		if _, ok := first[f]; !ok {
			t.Errorf("catching up without %s: %v", f, first)
		}
	}
	rn.stop(t, "catchup")
}
