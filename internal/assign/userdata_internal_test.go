package assign

import (
	"encoding/binary"
	"maps"
	"slices"
	"testing"
)

func TestMemberDataRoundTrip(t *testing.T) {
	for _, local := range []map[Task]int64{
		nil,
		{{0, 0}: 0},
		{{1, 3}: 1 << 40, {0, 3}: 17, {2, 0}: 5},
	} {
		got := decodeMemberData(encodeMemberData(local))
		if len(local) == 0 && got != nil {
			t.Errorf("%v: decoded %v, want nil", local, got)
		}
		if !maps.Equal(got, local) {
			t.Errorf("decoded %v, want %v", got, local)
		}
	}
	// The same offsets give the same bytes: kgo compares join metadata.
	a := encodeMemberData(map[Task]int64{{0, 1}: 1, {1, 0}: 2, {0, 0}: 3})
	b := encodeMemberData(map[Task]int64{{1, 0}: 2, {0, 0}: 3, {0, 1}: 1})
	if !slices.Equal(a, b) {
		t.Errorf("the same offsets encode as %x and %x", a, b)
	}
}

func TestAssignmentDataRoundTrip(t *testing.T) {
	in := []Task{{1, 2}, {0, 2}, {0, 0}}
	got := decodeAssignmentData(encodeAssignmentData(in))
	want := []Task{{0, 0}, {0, 2}, {1, 2}}
	if !slices.Equal(got, want) {
		t.Errorf("decoded %v, want %v", got, want)
	}
	if got := decodeAssignmentData(encodeAssignmentData(nil)); got != nil {
		t.Errorf("no standbys decoded as %v", got)
	}
}

// User data of another client, of an older samsa (none), garbled or cut
// short reads as nothing; a newer version's is read as far as version 1
// goes.
func TestUserDataForeign(t *testing.T) {
	v1 := encodeMemberData(map[Task]int64{{0, 1}: 9})
	newer := slices.Clone(v1)
	binary.BigEndian.PutUint16(newer, 7)
	newer = append(newer, "fields of version 7"...)
	huge := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint16(nil, 1), 1<<31)
	for _, tc := range []struct {
		name string
		b    []byte
		want map[Task]int64
	}{
		{"empty", nil, nil},
		{"version 0", append([]byte{0, 0}, v1[2:]...), nil},
		{"negative version", append([]byte{0x80, 1}, v1[2:]...), nil},
		{"cut short", v1[:len(v1)-1], nil},
		{"count past the end", huge, nil},
		{"sticky balancer data", []byte{0, 0, 0, 1, 0, 5, 't', 'o', 'p', 'i', 'c'}, nil},
		{"newer version", newer, map[Task]int64{{0, 1}: 9}},
		{"negative offset", encodeMemberData(map[Task]int64{{0, 1}: -5, {0, 2}: 3}), map[Task]int64{{0, 2}: 3}},
	} {
		if got := decodeMemberData(tc.b); !maps.Equal(got, tc.want) {
			t.Errorf("%s: decoded %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Whatever the bytes, decoding neither panics nor returns entries a
// member could not have sent, and what it returns encodes to data that
// decodes the same.
func FuzzUserData(f *testing.F) {
	f.Add(encodeMemberData(map[Task]int64{{0, 1}: 9, {3, 0}: 1 << 50}))
	f.Add(encodeAssignmentData([]Task{{0, 1}, {2, 7}}))
	f.Add([]byte{0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		local := decodeMemberData(b)
		for task, off := range local {
			if task.Sub < 0 || task.Partition < 0 || off < 0 {
				t.Fatalf("decoded %v: %d", task, off)
			}
		}
		if again := decodeMemberData(encodeMemberData(local)); !maps.Equal(again, local) {
			t.Fatalf("re-encoded %v decodes as %v", local, again)
		}
		standbys := decodeAssignmentData(b)
		if again := decodeAssignmentData(encodeAssignmentData(standbys)); !slices.Equal(again, standbys) {
			t.Fatalf("re-encoded %v decodes as %v", standbys, again)
		}
	})
}
