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
//	    count × (int32 sub-topology, int32 partition, int64 offset),
//	    tasks incoming
//	assignment (SyncGroup):      int16 version, tasks standby, tasks incoming
//	    where tasks is int32 count, count × (int32 sub-topology, int32 partition)
//
// The member's entries are the tasks whose stores it holds on local disk,
// each with the sum of the changelog offsets its stores reflect, and the
// tasks its last assignment said it gets next (see Assignment.Incoming),
// which the leader treats as its own while nobody else claims them. The
// assignment names the member's standby tasks, and the tasks it is to get
// once their owners have given them up (the next cooperative round).
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

// memberData is what a member reports in its JoinGroup metadata.
type memberData struct {
	local    map[Task]int64 // the sum of the changelog offsets of each task's local stores
	incoming []Task         // the tasks its last assignment said it gets next
}

// encodeMemberData encodes a member's data, local tasks in task order
// (the same data gives the same bytes).
func encodeMemberData(d memberData) []byte {
	if len(d.local) == 0 && len(d.incoming) == 0 {
		return nil
	}
	b := binary.BigEndian.AppendUint16(nil, userDataVersion)
	tasks := slices.SortedFunc(maps.Keys(d.local), Task.compare)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tasks)))
	for _, t := range tasks {
		b = appendTask(b, t)
		b = binary.BigEndian.AppendUint64(b, uint64(d.local[t]))
	}
	return appendTasks(b, d.incoming)
}

// decodeMemberData decodes a member's data. It returns none for anything
// that is not samsa member data; entries with a negative sub-topology,
// partition or offset are skipped.
func decodeMemberData(b []byte) memberData {
	n, rest, ok := userDataHeader(b, 16)
	if !ok {
		return memberData{}
	}
	d := memberData{local: make(map[Task]int64, n)}
	for i := range n {
		e := rest[16*i:]
		t := Task{int(int32(binary.BigEndian.Uint32(e))), int32(binary.BigEndian.Uint32(e[4:]))}
		off := int64(binary.BigEndian.Uint64(e[8:]))
		if t.Sub < 0 || t.Partition < 0 || off < 0 {
			continue
		}
		d.local[t] = max(d.local[t], off)
	}
	d.incoming = readTasks(rest[16*n:])
	return d
}

// encodeAssignmentData encodes a member's standby and incoming tasks.
func encodeAssignmentData(standby, incoming []Task) []byte {
	if len(standby) == 0 && len(incoming) == 0 {
		return nil
	}
	b := binary.BigEndian.AppendUint16(nil, userDataVersion)
	return appendTasks(appendTasks(b, standby), incoming)
}

// appendTasks appends a count and the tasks.
func appendTasks(dst []byte, ts []Task) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(ts)))
	for _, t := range ts {
		dst = appendTask(dst, t)
	}
	return dst
}

// decodeAssignmentData decodes a member's standby and incoming tasks,
// each sorted and without duplicates. It returns none for anything that
// is not samsa assignment data.
func decodeAssignmentData(b []byte) (standby, incoming []Task) {
	n, rest, ok := userDataHeader(b, 8)
	if !ok {
		return nil, nil
	}
	standby = decodeTasks(rest[:8*n])
	incoming = readTasks(rest[8*n:])
	return standby, incoming
}

// readTasks reads a count and that many tasks (see decodeTasks) from the
// start of b; none if b is too short for them.
func readTasks(b []byte) []Task {
	if len(b) < 4 {
		return nil
	}
	n := int(binary.BigEndian.Uint32(b))
	if n > maxUserDataEntries || 8*n > len(b)-4 {
		return nil
	}
	return decodeTasks(b[4 : 4+8*n])
}

// decodeTasks decodes tasks of 8 bytes each, sorted, without duplicates
// or negative numbers.
func decodeTasks(b []byte) []Task {
	var out []Task
	for ; len(b) >= 8; b = b[8:] {
		t := Task{int(int32(binary.BigEndian.Uint32(b))), int32(binary.BigEndian.Uint32(b[4:]))}
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
