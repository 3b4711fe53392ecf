package state

// Undoing the writes of one input record.
//
// A record whose processing fails must leave no effect on the stores,
// whatever the job's error policy: a record that stops the job is
// processed again after the restart, and its writes must not count twice;
// a record that is skipped or dead-lettered must not leave half its
// writes behind. The task brackets each record with BeginRecord and
// EndRecord, or RollbackRecord when it fails: every change the record
// makes to a cache entry is remembered, and a rollback puts the entries
// back as they were, dirty flags, byte counts and flush order included.
//
// Writes to a store that mirrors a topic (a table read from a topic) are
// not undone: such a store holds its topic as it is, record for record,
// and a restore from the topic would apply the record anyway.

// undoEntry is a cache entry as it was before the record changed it.
type undoEntry struct {
	s       *Store
	key     string
	existed bool // the key was in the cache
	value   []byte
	dirty   bool
	pending bool
}

// BeginRecord starts remembering the stores' changes, so that
// RollbackRecord can undo them. Each record is bracketed by BeginRecord
// and EndRecord or RollbackRecord; Flush and Apply are never called
// inside.
func (ts *TaskStores) BeginRecord() {
	ts.undoing = true
	for _, s := range ts.order {
		s.dirtyMark = len(s.dirty)
	}
}

// EndRecord keeps the changes made since BeginRecord.
func (ts *TaskStores) EndRecord() {
	ts.undoing = false
	clear(ts.undo) // no references to old values
	ts.undo = ts.undo[:0]
}

// RollbackRecord undoes every change made since BeginRecord.
func (ts *TaskStores) RollbackRecord() {
	for i := len(ts.undo) - 1; i >= 0; i-- {
		u := &ts.undo[i]
		s := u.s
		e := s.cache[u.key] // present: a changed entry is dirty, and dirty entries are never evicted
		ts.bytes -= e.size(u.key)
		if e.dirty {
			ts.dirtyB -= e.size(u.key)
		}
		if !u.existed {
			delete(s.cache, u.key)
			continue
		}
		e.value, e.dirty, e.pending = u.value, u.dirty, u.pending
		ts.bytes += e.size(u.key)
		if e.dirty {
			ts.dirtyB += e.size(u.key)
		}
	}
	for _, s := range ts.order {
		if s.spec.Changelog != "" {
			continue // a mirror keeps its changes
		}
		// Keys first changed by the record were appended to the flush
		// order; no other change touches it inside a record.
		clear(s.dirty[s.dirtyMark:])
		s.dirty = s.dirty[:s.dirtyMark]
	}
	ts.EndRecord()
}

// remember records the state of the entry of key before a change, if a
// record is being tracked.
func (s *Store) remember(key string, e *entry, existed bool) {
	ts := s.ts
	if !ts.undoing || s.spec.Changelog != "" {
		return
	}
	u := undoEntry{s: s, key: key, existed: existed}
	if existed {
		u.value, u.dirty, u.pending = e.value, e.dirty, e.pending
	}
	ts.undo = append(ts.undo, u)
}
