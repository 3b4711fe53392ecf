package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// samsa runs an admin helper against addr and returns its exit code and
// outputs.
func samsa(t *testing.T, addr, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	code := admin(ctx, append(args, "--brokers", addr, "--timeout", "5s"), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// fields returns the lines of out split into fields.
func fields(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func hasRow(out string, want ...string) bool {
	for _, r := range fields(out) {
		if slices.Equal(r, want) {
			return true
		}
	}
	return false
}

// The admin helpers against a Kafka-protocol broker (kfake): topics
// created, listed, described and deleted; records produced from lines and
// consumed back; groups and their lag.
func TestAdminHelpers(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]

	if code, out, errOut := samsa(t, addr, "", "topics", "create", "words", "keyed", "--partitions", "3", "--config", "cleanup.policy=compact"); code != 0 ||
		out != "keyed: created with 3 partitions\nwords: created with 3 partitions\n" {
		t.Fatalf("topics create: exit %d, %q, %s", code, out, errOut)
	}
	if code, _, errOut := samsa(t, addr, "", "topics", "create", "words"); code != 1 || !strings.Contains(errOut, `topic "words": TOPIC_ALREADY_EXISTS`) {
		t.Errorf("topics create of an existing topic: exit %d, %q", code, errOut)
	}
	if code, _, errOut := samsa(t, addr, "a\tb\nc\n", "produce", "keyed", "--key-separator", "\t"); code != 1 || !strings.Contains(errOut, `line 2 has no key separator`) {
		t.Errorf("produce of a line with no separator: exit %d, %q", code, errOut)
	}
	if code, _, errOut := samsa(t, addr, "ann\t1\nbob\t2\nann\t3\n", "produce", "keyed", "--key-separator", "\t"); code != 0 || !strings.Contains(errOut, "wrote 3 records to keyed") {
		t.Fatalf("produce: exit %d, %s", code, errOut)
	}
	if code, _, errOut := samsa(t, addr, "one\ntwo\n", "produce", "words", "--partition", "2"); code != 0 {
		t.Fatalf("produce --partition: exit %d, %s", code, errOut)
	}

	code, out, errOut := samsa(t, addr, "", "topics")
	if code != 0 || !hasRow(out, "TOPIC", "PARTITIONS", "REPLICAS", "RECORDS") || !hasRow(out, "keyed", "3", "1", "3") || !hasRow(out, "words", "3", "1", "2") {
		t.Errorf("topics: exit %d, %s\n%s", code, errOut, out)
	}
	code, out, errOut = samsa(t, addr, "", "topics", "describe", "words")
	if code != 0 || !strings.Contains(out, "Topic words: 3 partitions, 1 replicas\nConfig: cleanup.policy=compact\n") || !hasRow(out, "2", "0", "[0]", "0", "2", "2") {
		t.Errorf("topics describe: exit %d, %s\n%s", code, errOut, out)
	}
	if code, _, errOut := samsa(t, addr, "", "topics", "describe", "nosuch"); code != 1 || !strings.Contains(errOut, "UNKNOWN_TOPIC_OR_PARTITION") {
		t.Errorf("topics describe nosuch: exit %d, %q", code, errOut)
	}

	code, out, errOut = samsa(t, addr, "", "consume", "words", "--until-end", "--offsets")
	if code != 0 || out != "2@0\tnull\tone\n2@1\tnull\ttwo\n" {
		t.Errorf("consume words: exit %d, %q, %s", code, out, errOut)
	}
	code, out, _ = samsa(t, addr, "", "consume", "keyed", "--until-end")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	slices.Sort(lines)
	if code != 0 || !slices.Equal(lines, []string{"ann\t1", "ann\t3", "bob\t2"}) {
		t.Errorf("consume keyed: exit %d, %q", code, out)
	}
	if code, out, _ := samsa(t, addr, "", "consume", "words", "--until-end", "--from-end"); code != 0 || out != "" {
		t.Errorf("consume --from-end --until-end: exit %d, %q", code, out)
	}
	if got := show([]byte{0, 0, 0, 0, 0, 0, 0, 42}, "int64"); got != "42" {
		t.Errorf("show as int64: %q", got)
	}
	if got := show([]byte{0xde, 0xad}, "hex"); got != "dead" {
		t.Errorf("show as hex: %q", got)
	}

	// A group with commits: listed, described, its lag.
	if code, out, _ := samsa(t, addr, "", "lag"); code != 0 || out != "No consumer groups.\n" {
		t.Errorf("lag without groups: exit %d, %q", code, out)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "words", Partition: 2, At: 1, LeaderEpoch: -1})
	if err := kadm.NewClient(cl).CommitAllOffsets(context.Background(), "readers", offs); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := samsa(t, addr, "", "groups"); code != 0 || !hasRow(out, "readers", "Empty", "0") {
		t.Errorf("groups: exit %d, %s\n%s", code, errOut, out)
	}
	code, out, errOut = samsa(t, addr, "", "groups", "describe", "readers")
	if code != 0 || !strings.Contains(out, "Group readers: Empty, 0 members") || !hasRow(out, "words", "2", "1", "2", "1", "-") {
		t.Errorf("groups describe: exit %d, %s\n%s", code, errOut, out)
	}
	if code, out, _ := samsa(t, addr, "", "lag", "readers"); code != 0 || !strings.Contains(out, "Total lag of readers: 1\n") {
		t.Errorf("lag readers: exit %d\n%s", code, out)
	}

	if code, out, _ := samsa(t, addr, "", "topics", "delete", "keyed"); code != 0 || out != "keyed: deleted\n" {
		t.Errorf("topics delete: exit %d, %q", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"topics", "create"}, "missing TOPIC"},
		{[]string{"topics", "frob"}, `unknown command "topics frob"`},
		{[]string{"consume", "a", "b"}, "want one TOPIC"},
		{[]string{"consume", "words", "--value-as", "float"}, `"float" is not one of string, int64, hex`},
		{[]string{"topics", "create", "x", "--config", "nokey"}, `"nokey": want KEY=VALUE`},
		{[]string{"topics", "--bogus"}, "flag provided but not defined: --bogus"},
	} {
		if code, _, errOut := samsa(t, addr, "", tc.args...); code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
	if code, _, errOut := samsa(t, "127.0.0.1:1", "", "topics"); code != 1 || !strings.Contains(errOut, "no broker reachable at 127.0.0.1:1") {
		t.Errorf("topics with no broker: exit %d, %q", code, errOut)
	}
}
