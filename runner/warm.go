package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/samsa-go/samsa/internal/assign"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
	"github.com/samsa-go/samsa/stream"
)

// Warm stores: every instance tells the group's leader, in its join
// metadata, which task stores it holds on local disk and the changelog
// offsets they reflect; the leader gives a task that has to move to the
// instance with the most caught-up copy (see internal/assign), which then
// restores only the tail of the changelog it lacks.

// localStores is what this instance holds under <state-dir>/tasks: for
// each task, the changelog offset each of its Pebble stores reflects, as
// last applied by the task, a standby copy, or found at start. In-memory
// stores are not there after a restart, so they do not count. It is safe
// for concurrent use: the group's join reads it.
type localStores struct {
	durable [][]string // names of the Pebble stores of each sub-topology

	mu      sync.Mutex
	offsets map[stream.TaskID]map[string]int64
}

func newLocalStores(topo *stream.Topology) *localStores {
	l := &localStores{offsets: map[stream.TaskID]map[string]int64{}}
	for _, sub := range topo.Subtopologies() {
		var names []string
		for _, s := range sub.Stores {
			if !s.InMemory {
				names = append(names, s.Name)
			}
		}
		l.durable = append(l.durable, names)
	}
	return l
}

// stateful reports whether the tasks of sub-topology sub have Pebble
// stores: the ones worth a warm copy.
func (l *localStores) stateful(sub int) bool {
	return sub >= 0 && sub < len(l.durable) && len(l.durable[sub]) > 0
}

// note records the changelog offsets the stores of task id reflect; it
// ignores in-memory stores and stores with no offset.
func (l *localStores) note(id stream.TaskID, offsets map[string]int64) {
	if !l.stateful(id.Subtopology) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.offsets[id]
	if cur == nil {
		cur = map[string]int64{}
		l.offsets[id] = cur
	}
	for _, name := range l.durable[id.Subtopology] {
		if off, ok := offsets[name]; ok {
			if off == state.NoOffset {
				delete(cur, name)
			} else {
				cur[name] = off
			}
		}
	}
	if len(cur) == 0 {
		delete(l.offsets, id)
	}
}

// report returns, for each task with stores here, the sum of their
// offsets: what assign.Options.Local wants.
func (l *localStores) report() map[assign.Task]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[assign.Task]int64, len(l.offsets))
	for id, offs := range l.offsets {
		var sum int64
		for _, off := range offs {
			sum += off
		}
		out[assign.Task{Sub: id.Subtopology, Partition: id.Partition}] = sum
	}
	return out
}

// scanLocalStores fills m.local with the task stores found under the
// state directory: the directories of this job's tasks, made for the
// current partition counts, whose stores still match their changelogs
// (a store whose offset is before its changelog's start, after a replay
// truncated it, is no warm copy). Directories it cannot read are skipped:
// opening them for a task deals with them.
func (m *member) scanLocalStores(ctx context.Context) error {
	dir := filepath.Join(m.r.cfg.StateDir, "tasks")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("runner: read state directory %s (--state-dir): %w", dir, err)
	}
	found := map[stream.TaskID]map[string]int64{}
	for _, e := range entries {
		id, ok := parseTaskDir(e.Name())
		if !ok || !e.IsDir() || !m.local.stateful(id.Subtopology) || id.Subtopology >= len(m.r.topo.Subtopologies()) {
			continue
		}
		offs, err := m.readTaskOffsets(filepath.Join(dir, e.Name()), id)
		if err != nil {
			m.log.Debug("not counting a local store directory as warm", "task", id, "reason", err)
			continue
		}
		found[id] = offs
	}
	if len(found) == 0 {
		return nil
	}
	var topics []string
	for _, sub := range m.r.topo.Subtopologies() {
		for _, s := range sub.Stores {
			topics = append(topics, m.r.topo.ChangelogTopic(s.Name))
		}
	}
	slices.Sort(topics)
	starts, err := m.adm.ListStartOffsets(ctx, slices.Compact(topics)...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list changelog start offsets: %w", err)
	}
	var warm []string
	for _, id := range slices.SortedFunc(maps.Keys(found), compareTaskIDs) {
		offs := found[id]
		for name, off := range offs {
			if o, ok := starts.Lookup(m.r.topo.ChangelogTopic(name), id.Partition); ok && off < o.Offset {
				delete(offs, name)
			}
		}
		if len(offs) > 0 {
			m.local.note(id, offs)
			warm = append(warm, id.String())
		}
	}
	if len(warm) > 0 {
		m.log.Info("found local task stores", "tasks", strings.Join(warm, ","))
	}
	return nil
}

// readTaskOffsets returns the offsets of the Pebble stores of task id in
// dir, if dir was made for that task with the current partition count.
func (m *member) readTaskOffsets(dir string, id stream.TaskID) (map[string]int64, error) {
	db, ident, err := pebblestore.OpenReadOnly(dir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if want := m.taskIdentity(id); ident != want {
		return nil, fmt.Errorf("made for job %q task %s with %d partitions", ident.Job, ident.Task, ident.Partitions)
	}
	offs := map[string]int64{}
	for _, name := range m.local.durable[id.Subtopology] {
		off, err := db.Offset(name)
		if err != nil {
			return nil, err
		}
		if off != state.NoOffset {
			offs[name] = off
		}
	}
	return offs, nil
}

// taskIdentity is what the Pebble directory of task id is made for.
func (m *member) taskIdentity(id stream.TaskID) pebblestore.Identity {
	return pebblestore.Identity{Job: m.r.topo.Name(), Task: id.String(), Partitions: m.partitions[m.r.topo.Subtopologies()[id.Subtopology].Inputs[0]]}
}

// parseTaskDir parses a task directory's name, "<sub-topology>_<partition>".
func parseTaskDir(name string) (stream.TaskID, bool) {
	s, p, ok := strings.Cut(name, "_")
	sub, err1 := strconv.Atoi(s)
	part, err2 := strconv.ParseInt(p, 10, 32)
	if !ok || err1 != nil || err2 != nil || sub < 0 || part < 0 {
		return stream.TaskID{}, false
	}
	return stream.TaskID{Subtopology: sub, Partition: int32(part)}, true
}

// openTaskDB opens the Pebble directory of task id's stores. One that is
// corrupt or was made for something else is wiped: the stores are
// restored from their changelogs.
func (m *member) openTaskDB(id stream.TaskID) (*pebblestore.DB, error) {
	dir := filepath.Join(m.r.cfg.StateDir, "tasks", id.String())
	ident := m.taskIdentity(id)
	opts := pebblestore.Options{Cache: m.blockCache, MemTableSize: m.r.cfg.MemTableSize}
	db, err := pebblestore.Open(dir, ident, opts)
	if errors.Is(err, pebblestore.ErrForeign) || errors.Is(err, pebblestore.ErrCorrupt) {
		m.log.Warn("wiping the local store directory; the stores will be restored from their changelogs", "task", id, "dir", dir, "reason", err)
		if rerr := os.RemoveAll(dir); rerr != nil {
			return nil, fmt.Errorf("runner: wipe %s: %w", dir, rerr)
		}
		m.local.note(id, m.noOffsets(id))
		db, err = pebblestore.Open(dir, ident, opts)
	}
	if err != nil {
		return nil, err // it names the directory; the callers name the task
	}
	return db, nil
}

// noOffsets maps each Pebble store of task id to NoOffset.
func (m *member) noOffsets(id stream.TaskID) map[string]int64 {
	offs := map[string]int64{}
	for _, name := range m.local.durable[id.Subtopology] {
		offs[name] = state.NoOffset
	}
	return offs
}

// balancerOptions are the options of the job's group balancer: warm
// stores reported from m.local, standby tasks handed to m.standbys.
func (m *member) balancerOptions() assign.Options {
	opts := assign.Options{
		Local:    m.local.report,
		Stateful: m.local.stateful,
		Log:      m.log.Info,
	}
	if m.standbys != nil {
		opts.Standbys = m.r.cfg.StandbyReplicas
		opts.OnAssigned = m.standbys.setAssigned
	}
	return opts
}
