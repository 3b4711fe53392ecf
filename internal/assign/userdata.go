package assign

import (
	"encoding/binary"
	"maps"
	"slices"
)

// The balancer's user data, in the UserData fields of the standard
// consumer protocol's messages, big-endian:
//
//	member (JoinGroup metadata): int16 version, int32 count,
//	    count × (int32 sub-topology, int32 partition, int64 offset)
//	assignment (SyncGroup):      int16 version, int32 count,
//	    count × (int32 sub-topology, int32 partition)
//
// The member's entries are the tasks whose stores it holds on local disk,
// each with the sum of the changelog offsets its stores reflect; the
// assignment's are the member's standby tasks.
//
// Version 1 is the only one. A later version may only append fields after
// version 1's: a reader takes the version 1 part of any version ≥ 1 and
// ignores the rest. Data that is not this (a foreign client's, a garbled
// one, an older samsa's empty user data) reads as no entries, which costs
// the leader only its preference for warm stores.
const userDataVersion = 1

// maxUserDataEntries bounds what a reader accepts, whatever a count says.
const maxUserDataEntries = 1 << 20

func appendTask(dst []byte, t Task) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(int32(t.Sub)))
	return binary.BigEndian.AppendUint32(dst, uint32(t.Partition))
}

// encodeMemberData encodes a member's local task offsets, in task order
// (the same map gives the same bytes).
func encodeMemberData(local map[Task]int64) []byte {
	if len(local) == 0 {
		return nil
	}
	b := binary.BigEndian.AppendUint16(nil, userDataVersion)
	tasks := slices.SortedFunc(maps.Keys(local), Task.compare)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tasks)))
	for _, t := range tasks {
		b = appendTask(b, t)
		b = binary.BigEndian.AppendUint64(b, uint64(local[t]))
	}
	return b
}

// decodeMemberData decodes a member's local task offsets. It returns nil
// for anything that is not samsa member data; entries with a negative
// sub-topology, partition or offset are skipped.
func decodeMemberData(b []byte) map[Task]int64 {
	n, rest, ok := userDataHeader(b, 16)
	if !ok {
		return nil
	}
	out := make(map[Task]int64, n)
	for i := range n {
		e := rest[16*i:]
		t := Task{int(int32(binary.BigEndian.Uint32(e))), int32(binary.BigEndian.Uint32(e[4:]))}
		off := int64(binary.BigEndian.Uint64(e[8:]))
		if t.Sub < 0 || t.Partition < 0 || off < 0 {
			continue
		}
		out[t] = max(out[t], off)
	}
	return out
}

// encodeAssignmentData encodes a member's standby tasks.
func encodeAssignmentData(standbys []Task) []byte {
	if len(standbys) == 0 {
		return nil
	}
	b := binary.BigEndian.AppendUint16(nil, userDataVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(standbys)))
	for _, t := range standbys {
		b = appendTask(b, t)
	}
	return b
}

// decodeAssignmentData decodes a member's standby tasks, sorted and
// without duplicates. It returns nil for anything that is not samsa
// assignment data.
func decodeAssignmentData(b []byte) []Task {
	n, rest, ok := userDataHeader(b, 8)
	if !ok {
		return nil
	}
	out := make([]Task, 0, n)
	for i := range n {
		e := rest[8*i:]
		t := Task{int(int32(binary.BigEndian.Uint32(e))), int32(binary.BigEndian.Uint32(e[4:]))}
		if t.Sub >= 0 && t.Partition >= 0 {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, Task.compare)
	return slices.CompactFunc(out, func(a, b Task) bool { return a.compare(b) == 0 })
}

// userDataHeader checks the version and the count of user data whose
// entries take size bytes each, and returns the count and the entries.
func userDataHeader(b []byte, size int) (int, []byte, bool) {
	if len(b) < 6 || int16(binary.BigEndian.Uint16(b)) < userDataVersion {
		return 0, nil, false
	}
	n := int(binary.BigEndian.Uint32(b[2:]))
	rest := b[6:]
	if n > maxUserDataEntries || n*size > len(rest) {
		return 0, nil, false
	}
	return n, rest, true
}
