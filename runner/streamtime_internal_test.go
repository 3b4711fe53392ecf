package runner

import (
	"testing"
	"time"
)

func TestCommitMetaStreamTime(t *testing.T) {
	for _, st := range []time.Time{time.UnixMilli(1714564800123), time.UnixMilli(-5), {}} {
		meta := encodeTaskMeta(map[string]int64{"counts": 3}, st)
		cm, err := parseMeta(meta)
		if err != nil {
			t.Fatalf("parseMeta(%q): %v", meta, err)
		}
		if !cm.streamTime.Equal(st) || cm.offsets["counts"] != 3 || cm.at.IsZero() {
			t.Errorf("parseMeta(%q) = %+v; want stream time %v, counts at 3 and a commit time", meta, cm, st)
		}
		if got := metaStreamTime(meta); !got.Equal(st) {
			t.Errorf("metaStreamTime(%q) = %v, want %v", meta, got, st)
		}
	}
	// Metadata of before stream times, or not samsa's, has none.
	for _, meta := range []string{"samsa1;counts=3", "", "other"} {
		if got := metaStreamTime(meta); !got.IsZero() {
			t.Errorf("metaStreamTime(%q) = %v, want zero", meta, got)
		}
	}
	// Stream time is not a store.
	if offsets, err := decodeMeta("samsa1;a=1;@st=99"); err != nil || len(offsets) != 1 {
		t.Errorf("decodeMeta with a stream time: %v, %v", offsets, err)
	}
}
