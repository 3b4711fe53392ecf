package runner

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func TestCommitMeta(t *testing.T) {
	at := time.UnixMilli(1714564800123)
	for _, tc := range []struct {
		meta    string
		offsets map[string]int64
		at      time.Time
		err     string
	}{
		{meta: "samsa1", offsets: map[string]int64{}},
		{meta: "samsa1;counts=42", offsets: map[string]int64{"counts": 42}},                          // before commit times
		{meta: "samsa1;a=1;b=2;@t=1714564800123", offsets: map[string]int64{"a": 1, "b": 2}, at: at}, // now
		{meta: "samsa1;a=1;@t=1714564800123;@zz=7", offsets: map[string]int64{"a": 1}, at: at},       // a later field
		{meta: "", err: "not samsa commit metadata"},
		{meta: "other;a=1", err: "not samsa commit metadata"},
		{meta: "samsa1;a", err: `bad field "a"`},
		{meta: "samsa1;a=-1", err: `bad field "a=-1"`},
		{meta: "samsa1;@t=x", err: `bad field "@t=x"`},
	} {
		cm, err := parseMeta(tc.meta)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseMeta(%q): error %v, want one saying %q", tc.meta, err, tc.err)
			}
		case err != nil:
			t.Errorf("parseMeta(%q): %v", tc.meta, err)
		case !maps.Equal(cm.offsets, tc.offsets) || !cm.at.Equal(tc.at):
			t.Errorf("parseMeta(%q) = %v at %v, want %v at %v", tc.meta, cm.offsets, cm.at, tc.offsets, tc.at)
		}
	}
	// What encodeMeta writes parses back, with the time of the commit.
	before := time.Now().Truncate(time.Millisecond)
	cm, err := parseMeta(encodeMeta(map[string]int64{"counts": 7, "seen": 0}))
	if err != nil || cm.offsets["counts"] != 7 || cm.offsets["seen"] != 0 || len(cm.offsets) != 2 || cm.at.Before(before) || cm.at.After(time.Now()) {
		t.Errorf("round trip: %v at %v, %v", cm.offsets, cm.at, err)
	}
}

// Commit metadata comes from the brokers: whatever it holds, parsing it
// does not panic, and what parses is written back the same way.
func FuzzParseMeta(f *testing.F) {
	f.Add("samsa1;counts=42;@t=1714564800123")
	f.Add("samsa1;a=1;b=2")
	f.Add("samsa1;;=;@=1")
	f.Fuzz(func(t *testing.T, meta string) {
		cm, err := parseMeta(meta)
		if err != nil {
			return
		}
		again, err := parseMeta(cm.String())
		if err != nil || !maps.Equal(cm.offsets, again.offsets) || !cm.at.Equal(again.at) {
			t.Errorf("%q -> %q -> %v at %v, %v", meta, cm.String(), again.offsets, again.at, err)
		}
	})
}
