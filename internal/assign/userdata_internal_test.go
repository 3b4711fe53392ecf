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
		got := decodeMemberData(encodeMemberData(memberData{local: local}))
		if len(local) == 0 && got.local != nil {
			t.Errorf("%v: decoded %v, want nil", local, got.local)
		}
		if !maps.Equal(got.local, local) || got.incoming != nil {
			t.Errorf("decoded %+v, want %v", got, local)
		}
	}
	incoming := []Task{{1, 0}, {0, 2}} // in task order: partition first
	d := memberData{local: map[Task]int64{{1, 3}: 7}, incoming: []Task{{1, 0}, {0, 2}}}
	if got := decodeMemberData(encodeMemberData(d)); !maps.Equal(got.local, d.local) || !slices.Equal(got.incoming, incoming) {
		t.Errorf("decoded %+v, want %+v", got, d)
	}
	if got := decodeMemberData(encodeMemberData(memberData{incoming: incoming})); len(got.local) != 0 || !slices.Equal(got.incoming, incoming) {
		t.Errorf("incoming tasks only decoded as %+v", got)
	}
	// The same offsets give the same bytes: kgo compares join metadata.
	a := encodeMemberData(memberData{local: map[Task]int64{{0, 1}: 1, {1, 0}: 2, {0, 0}: 3}})
	b := encodeMemberData(memberData{local: map[Task]int64{{1, 0}: 2, {0, 0}: 3, {0, 1}: 1}})
	if !slices.Equal(a, b) {
		t.Errorf("the same offsets encode as %x and %x", a, b)
	}
}

func TestAssignmentDataRoundTrip(t *testing.T) {
	standby, incoming := []Task{{1, 2}, {0, 2}, {0, 0}}, []Task{{3, 1}}
	gotS, gotI := decodeAssignmentData(encodeAssignmentData(standby, incoming))
	if want := []Task{{0, 0}, {0, 2}, {1, 2}}; !slices.Equal(gotS, want) || !slices.Equal(gotI, incoming) {
		t.Errorf("decoded %v and %v, want %v and %v", gotS, gotI, want, incoming)
	}
	if s, i := decodeAssignmentData(encodeAssignmentData(nil, nil)); s != nil || i != nil {
		t.Errorf("nothing decoded as %v and %v", s, i)
	}
	if s, i := decodeAssignmentData(encodeAssignmentData(nil, incoming)); s != nil || !slices.Equal(i, incoming) {
		t.Errorf("incoming tasks only decoded as %v and %v", s, i)
	}
	// Cut after the standby tasks: those are read.
	b := encodeAssignmentData(standby, incoming)
	if s, i := decodeAssignmentData(b[:6+8*len(standby)]); len(s) != len(standby) || i != nil {
		t.Errorf("data cut after the standby tasks decoded as %v and %v", s, i)
	}
}

// User data of another client, of an older samsa (none), garbled or cut
// short reads as nothing; a newer version's is read as far as version 1
// goes.
func TestUserDataForeign(t *testing.T) {
	v1 := encodeMemberData(memberData{local: map[Task]int64{{0, 1}: 9}})
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
		{"cut short", v1[:len(v1)-5], nil},
		{"cut in the incoming tasks", v1[:len(v1)-1], map[Task]int64{{0, 1}: 9}},
		{"count past the end", huge, nil},
		{"sticky balancer data", []byte{0, 0, 0, 1, 0, 5, 't', 'o', 'p', 'i', 'c'}, nil},
		{"newer version", newer, map[Task]int64{{0, 1}: 9}},
		{"negative offset", encodeMemberData(memberData{local: map[Task]int64{{0, 1}: -5, {0, 2}: 3}}), map[Task]int64{{0, 2}: 3}},
	} {
		if got := decodeMemberData(tc.b).local; !maps.Equal(got, tc.want) {
			t.Errorf("%s: decoded %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Whatever the bytes, decoding neither panics nor returns entries a
// member could not have sent, and what it returns encodes to data that
// decodes the same.
func FuzzUserData(f *testing.F) {
	f.Add(encodeMemberData(memberData{local: map[Task]int64{{0, 1}: 9, {3, 0}: 1 << 50}, incoming: []Task{{1, 2}}}))
	f.Add(encodeAssignmentData([]Task{{0, 1}, {2, 7}}, []Task{{1, 1}}))
	f.Add([]byte{0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := decodeMemberData(b)
		for task, off := range d.local {
			if task.Sub < 0 || task.Partition < 0 || off < 0 {
				t.Fatalf("decoded %v: %d", task, off)
			}
		}
		again := decodeMemberData(encodeMemberData(d))
		if !maps.Equal(again.local, d.local) || !slices.Equal(again.incoming, d.incoming) {
			t.Fatalf("re-encoded %+v decodes as %+v", d, again)
		}
		standby, incoming := decodeAssignmentData(b)
		againS, againI := decodeAssignmentData(encodeAssignmentData(standby, incoming))
		if !slices.Equal(againS, standby) || !slices.Equal(againI, incoming) {
			t.Fatalf("re-encoded %v and %v decode as %v and %v", standby, incoming, againS, againI)
		}
	})
}
