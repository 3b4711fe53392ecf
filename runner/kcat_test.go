package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKcatPageviews runs the pageviews example binary on its embedded
// broker and talks to it with kcat (librdkafka), a third-party Kafka
// client: metadata, producing input, consuming output read_committed.
// Then it restarts the job on the same state directory, after a SIGTERM
// and after a SIGKILL, and checks that topics, records and committed
// offsets survived: nothing is processed twice, and a new record is
// processed once.
func TestKcatPageviews(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a job binary; skipped with -short")
	}
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat is not installed (apt-get install kcat)")
	}
	t.Parallel()
	bin := procBuild(t, "../examples/pageviews")
	addr := kcatFreeAddr(t)
	stateDir := t.TempDir()
	flags := []string{"--state-dir", stateDir, "--embedded-listen", addr}

	// create-topics starts the embedded broker on the state directory,
	// creates the topics, and stops.
	ct := procStart(t, "pageviews create-topics", bin, nil, append([]string{"create-topics"}, flags...)...)
	if code := ct.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("create-topics exited with code %d", code)
	}
	for _, topic := range []string{"pageviews", "pageviews-by-user", "pageviews-errors"} {
		if want := topic + ": created with 4 partitions"; !strings.Contains(ct.stdout.String(), want) {
			t.Errorf("create-topics output lacks %q:\n%s", want, ct.stdout.String())
		}
	}

	runArgs := append([]string{"run", "--commit-interval", "200ms"}, flags...)
	job := kcatStartJob(t, bin, addr, "pageviews run 1", runArgs)

	// Metadata: the three topics, four partitions each, on one broker.
	var md struct {
		Brokers []struct {
			Name string `json:"name"`
		} `json:"brokers"`
		Topics []struct {
			Topic      string            `json:"topic"`
			Partitions []json.RawMessage `json:"partitions"`
		} `json:"topics"`
	}
	if err := json.Unmarshal([]byte(kcat(t, "", "-L", "-J", "-b", addr)), &md); err != nil {
		t.Fatalf("kcat -L -J: %v", err)
	}
	if len(md.Brokers) != 1 || md.Brokers[0].Name != addr {
		t.Errorf("kcat -L: brokers %+v, want one at %s", md.Brokers, addr)
	}
	topics := map[string]int{}
	for _, tp := range md.Topics {
		topics[tp.Topic] = len(tp.Partitions)
	}
	for _, topic := range []string{"pageviews", "pageviews-by-user", "pageviews-errors"} {
		if topics[topic] != 4 {
			t.Errorf("kcat -L: topic %s has %d partitions, want 4 (all topics: %v)", topic, topics[topic], topics)
		}
	}

	// Two people, a bot, and something that is not JSON.
	kcat(t, strings.Join([]string{
		`{"user":"ann","page":"/home","agent":"Firefox"}`,
		`{"user":"bot","page":"/home","agent":"Googlebot/2.1"}`,
		`this is not json`,
		`{"user":"chen","page":"/docs","agent":"curl/8.0"}`,
	}, "\n")+"\n", "-P", "-b", addr, "-t", "pageviews")

	wantViews := []string{
		`ann {"user":"ann","page":"/home","agent":"Firefox"}`,
		`chen {"user":"chen","page":"/docs","agent":"curl/8.0"}`,
	}
	wantErrors := []string{`<null> not JSON: this is not json`}
	kcatWaitTopic(t, job, addr, "pageviews-by-user", wantViews)
	kcatWaitTopic(t, job, addr, "pageviews-errors", wantErrors)

	if code := job.terminate(t, 30*time.Second); code != 0 {
		t.Fatalf("after SIGTERM the job exited with code %d, want 0", code)
	}

	// The restarted job finds its topics, records and committed offsets
	// in the state directory: it writes nothing again.
	job = kcatStartJob(t, bin, addr, "pageviews run 2", runArgs)
	if err := json.Unmarshal([]byte(kcat(t, "", "-L", "-J", "-b", addr)), &md); err != nil {
		t.Fatalf("kcat -L -J: %v", err)
	}
	if len(md.Topics) != 3 {
		t.Errorf("after the restart kcat -L lists %d topics, want 3", len(md.Topics))
	}
	if got := kcatConsume(t, addr, "pageviews"); len(got) != 4 {
		t.Errorf("after the restart pageviews holds %d records, want 4: %q", len(got), got)
	}
	kcat(t, `{"user":"dara","page":"/blog","agent":"Safari"}`+"\n", "-P", "-b", addr, "-t", "pageviews")
	kcatWaitCommitted(t, job, addr, "pageviews")
	wantViews = append(wantViews, `dara {"user":"dara","page":"/blog","agent":"Safari"}`)
	kcatCheckTopic(t, addr, "pageviews-by-user", wantViews)
	kcatCheckTopic(t, addr, "pageviews-errors", wantErrors)

	// A crash of the process takes the embedded broker down with the
	// job; what it had written and committed is in the data directory.
	job.kill(t)
	job = kcatStartJob(t, bin, addr, "pageviews run 3", runArgs)
	if got := kcatConsume(t, addr, "pageviews"); len(got) != 5 {
		t.Errorf("after a SIGKILL and restart pageviews holds %d records, want 5: %q", len(got), got)
	}
	kcat(t, `{"user":"eve","page":"/","agent":"Edge"}`+"\n", "-P", "-b", addr, "-t", "pageviews")
	kcatWaitCommitted(t, job, addr, "pageviews")
	kcatCheckTopic(t, addr, "pageviews-by-user", append(wantViews, `eve {"user":"eve","page":"/","agent":"Edge"}`))
	kcatCheckTopic(t, addr, "pageviews-errors", wantErrors)

	if code := job.terminate(t, 30*time.Second); code != 0 {
		t.Fatalf("after SIGTERM the restarted job exited with code %d, want 0", code)
	}
}

// kcatFreeAddr returns a loopback address with a port that was free.
func kcatFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// kcatStartJob starts the job binary and waits until its embedded broker
// accepts connections at addr.
func kcatStartJob(t *testing.T, bin, addr, name string, args []string) *proc {
	t.Helper()
	p := procStart(t, name, bin, nil, args...)
	procWaitFor(t, 60*time.Second, name+"'s embedded broker at "+addr, func() bool {
		p.running(t)
		if !strings.Contains(p.stderr.String(), "embedded broker started") {
			return false
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return p
}

// kcat runs kcat with args and stdin, and returns its standard output.
func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := kcatExec(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kcatExec(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kcat %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// kcatConsume reads topic from its start to its end, read_committed, and
// returns each record as "key value" (key <null> for a null key), sorted.
func kcatConsume(t *testing.T, addr, topic string) []string {
	t.Helper()
	recs, err := kcatTryConsume(addr, topic)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func kcatTryConsume(addr, topic string) ([]string, error) {
	// -e exits at the end of every partition; a short fetch wait gets
	// there quickly on the empty ones.
	out, err := kcatExec("", "-C", "-b", addr, "-t", topic, "-e", "-q", "-J",
		"-X", "isolation.level=read_committed", "-X", "fetch.wait.max.ms=50")
	if err != nil {
		return nil, err
	}
	var recs []string
	for line := range strings.Lines(out) {
		var r struct {
			Key     *string `json:"key"`
			Payload *string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("kcat -C -J %s: %v in %q", topic, err, line)
		}
		key, value := "<null>", "<null>"
		if r.Key != nil {
			key = *r.Key
		}
		if r.Payload != nil {
			value = *r.Payload
		}
		recs = append(recs, key+" "+value)
	}
	slices.Sort(recs)
	return recs, nil
}

// kcatWaitTopic waits until topic holds records (in any order), while job
// runs, and fails if it holds more.
func kcatWaitTopic(t *testing.T, job *proc, addr, topic string, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	var got []string
	procWaitFor(t, 30*time.Second, fmt.Sprintf("%s to hold %q", topic, want), func() bool {
		job.running(t)
		var err error
		if got, err = kcatTryConsume(addr, topic); err != nil {
			t.Logf("retrying: %v", err) // kcat may fail while the job starts
			return false
		}
		return len(got) >= len(want)
	})
	if !slices.Equal(got, want) {
		t.Errorf("%s holds\n%q\nwant\n%q", topic, got, want)
	}
}

// kcatCheckTopic checks that topic holds exactly records, in any order.
func kcatCheckTopic(t *testing.T, addr, topic string, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	if got := kcatConsume(t, addr, topic); !slices.Equal(got, want) {
		t.Errorf("%s holds\n%q\nwant\n%q", topic, got, want)
	}
}

// kcatWaitCommitted waits until the job has committed every record of
// its input topic: its outputs are then all written.
func kcatWaitCommitted(t *testing.T, job *proc, addr, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	procWaitFor(t, 30*time.Second, "the job to commit all of "+topic, func() bool {
		job.running(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return false
		}
		committed, err := adm.FetchOffsets(ctx, "pageviews")
		if err != nil {
			return false
		}
		caughtUp := true
		ends.Each(func(o kadm.ListedOffset) {
			c, ok := committed.Lookup(topic, o.Partition)
			if o.Offset > 0 && (!ok || c.At < o.Offset) {
				caughtUp = false
			}
		})
		return caughtUp
	})
}
