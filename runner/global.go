package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
	"github.com/samsa-go/samsa/stream"
)

// Global tables (stream.GlobalTable): each instance keeps a full copy of
// every global table's topic in one Pebble database under
// <state-dir>/global, shared by all its tasks. Before the instance joins
// its group, openGlobals reads each topic from the offsets the local copy
// reflects to the topic's end (read_committed), so no task processes a
// record before the tables hold what their topics held at start. Then a
// goroutine keeps reading the topics and applying what arrives, batch by
// batch, with the offsets each batch reaches: a restart reads only what
// is new. Tasks read the tables concurrently (state.GlobalStores
// serializes each lookup with the reader's writes). Partitions added to a
// global table's topic while an instance runs are read from its next
// start.

// globalTables is an instance's copy of the job's global tables and the
// reader that keeps it up to date.
type globalTables struct {
	m      *member
	stores *state.GlobalStores
	specs  []stream.GlobalSpec
	byTP   map[partKey]string // the store of each partition read
	cl     *kgo.Client

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// partKey names a partition.
type partKey struct {
	topic     string
	partition int32
}

// openGlobals opens the instance's global stores and brings them up to
// the end of their topics. It returns nil if the job has no global
// tables.
func (m *member) openGlobals(ctx context.Context) (*globalTables, error) {
	specs := m.r.topo.GlobalTables()
	if len(specs) == 0 {
		return nil, nil
	}
	dir := filepath.Join(m.r.cfg.StateDir, "global")
	ident := pebblestore.Identity{Job: m.r.topo.Name(), Task: "global"}
	opts := pebblestore.Options{Cache: m.blockCache, MemTableSize: m.r.cfg.MemTableSize}
	db, err := pebblestore.Open(dir, ident, opts)
	if errors.Is(err, pebblestore.ErrForeign) || errors.Is(err, pebblestore.ErrCorrupt) {
		m.log.Warn("wiping the global tables' local store; they will be read again from their topics", "dir", dir, "reason", err)
		if rerr := os.RemoveAll(dir); rerr != nil {
			return nil, fmt.Errorf("runner: wipe %s: %w", dir, rerr)
		}
		db, err = pebblestore.Open(dir, ident, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("runner: global tables: %w", err)
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Store
	}
	g := &globalTables{m: m, stores: state.NewGlobalStores(db, names), specs: specs, byTP: map[partKey]string{}}
	if err := g.restore(ctx); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// restore reads every global table's topic from the offsets its store
// reflects to the topic's end, and leaves g.cl positioned there.
func (g *globalTables) restore(ctx context.Context) error {
	m := g.m
	topics := make([]string, len(g.specs))
	for i, s := range g.specs {
		topics[i] = s.Topic
	}
	starts, err := m.adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list start offsets of global tables' topics: %w", err)
	}
	ends, err := m.adm.ListCommittedOffsets(ctx, topics...) // read_committed ends
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: list end offsets of global tables' topics: %w", err)
	}

	// A store holding offsets outside its topic's range is from another
	// incarnation of the topic (or compaction ran past it): read it anew.
	from := map[partKey]int64{}
	for _, s := range g.specs {
		var wipe bool
		for p := range int32(m.partitions[s.Topic]) {
			tp := partKey{s.Topic, p}
			g.byTP[tp] = s.Store
			start, _ := starts.Lookup(s.Topic, p)
			end, _ := ends.Lookup(s.Topic, p)
			local, err := g.stores.Offset(s.Store, p)
			if err != nil {
				return fmt.Errorf("runner: global table %s: %w", s.Store, err)
			}
			if local != state.NoOffset && (local < start.Offset || local > end.Offset) {
				m.log.Warn("wiping the global table's local copy: it does not match its topic", "table", s.Store, "partition", p,
					"local_offset", local, "topic_start", start.Offset, "topic_end", end.Offset)
				wipe = true
			}
			from[tp] = max(local, start.Offset)
		}
		if wipe {
			if err := g.stores.Wipe(s.Store); err != nil {
				return fmt.Errorf("runner: global table %s: %w", s.Store, err)
			}
			for tp := range from {
				if tp.topic == s.Topic {
					start, _ := starts.Lookup(s.Topic, tp.partition)
					from[tp] = start.Offset
				}
			}
		}
	}

	offsets := map[string]map[int32]kgo.Offset{}
	left := map[partKey]int64{} // partitions still to read, and their end
	for tp, off := range from {
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = map[int32]kgo.Offset{}
		}
		offsets[tp.topic][tp.partition] = kgo.NewOffset().At(off)
		end, _ := ends.Lookup(tp.topic, tp.partition)
		if off < end.Offset {
			left[tp] = end.Offset
		}
	}
	g.cl, err = kgo.NewClient(append(m.base,
		kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),           // to see the offsets of transaction markers
		kgo.FetchMaxWait(restoreFetchWait), // see there
	)...)
	if err != nil {
		return fmt.Errorf("runner: global tables: %w", err)
	}

	began := time.Now()
	b := g.newBatch()
	var read int64
	for len(left) > 0 {
		fs, quiet, err := m.pollChangelog(ctx, g.cl)
		if err != nil {
			return err
		}
		if quiet {
			break // nothing more arrives below the ends: compacted away
		}
		fs.EachRecord(func(r *kgo.Record) {
			tp := partKey{r.Topic, r.Partition}
			b.add(r)
			if !r.Attrs.IsControl() {
				read++
			}
			if end, ok := left[tp]; ok && r.Offset+1 >= end {
				delete(left, tp)
			}
		})
		if b.Len() >= restoreBatch {
			if err := b.apply(); err != nil {
				return err
			}
		}
	}
	if err := b.apply(); err != nil {
		return err
	}
	m.log.Info("restored global tables", "tables", strings.Join(sortedStores(g.specs), ","), "records", read,
		"took", time.Since(began).Round(time.Millisecond))
	return nil
}

// globalBatch collects records of the global tables' topics, and the
// offsets they reach, for one atomic write.
type globalBatch struct {
	g       *globalTables
	b       state.GlobalBatch
	reached map[partKey]int64
}

func (g *globalTables) newBatch() *globalBatch {
	return &globalBatch{g: g, reached: map[partKey]int64{}}
}

// add adds a record: a put, or a delete for a tombstone; for a control
// record (a transaction marker), only the offset it reaches.
func (b *globalBatch) add(r *kgo.Record) {
	tp := partKey{r.Topic, r.Partition}
	if !r.Attrs.IsControl() {
		b.b.Put(b.g.byTP[tp], r.Key, r.Value)
	}
	b.reached[tp] = r.Offset + 1
}

// Len returns the number of records added since the last apply.
func (b *globalBatch) Len() int { return b.b.Len() }

// apply writes the batch with the offsets it reaches.
func (b *globalBatch) apply() error {
	if len(b.reached) == 0 {
		return nil
	}
	for tp, off := range b.reached {
		b.b.SetOffset(b.g.byTP[tp], tp.partition, off)
	}
	if err := b.g.stores.Apply(&b.b); err != nil {
		return fmt.Errorf("runner: global tables: %w", err)
	}
	b.b.Reset()
	clear(b.reached)
	return nil
}

func sortedStores(specs []stream.GlobalSpec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Store
	}
	return out
}

// start keeps the global tables up to date until close: it applies what
// each poll of their topics returns as one batch. A failure to read or to
// apply is fatal to the instance (fail).
func (g *globalTables) start(fail func(error)) {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.wg.Go(func() {
		b := g.newBatch()
		for {
			fs := g.cl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			var ferr error
			fs.EachError(func(t string, p int32, e error) {
				if !errors.Is(e, context.Canceled) {
					ferr = errors.Join(ferr, fmt.Errorf("runner: read global table topic %s/%d: %w", t, p, g.m.r.denied(e, t, "Read")))
				}
			})
			if ferr != nil {
				fail(ferr)
				return
			}
			fs.EachRecord(b.add)
			if err := b.apply(); err != nil {
				fail(err)
				return
			}
		}
	})
}

// close stops the reader and closes the stores.
func (g *globalTables) close() error {
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
	if g.cl != nil {
		g.cl.Close()
	}
	return g.stores.Close()
}

// joinOptions are the engine options of the instance's tasks for global
// tables and the task header.
func (m *member) joinOptions() []engine.Option {
	var opts []engine.Option
	if m.globals != nil {
		opts = append(opts, engine.WithGlobalStores(m.globals))
	}
	if m.r.cfg.TaskHeader {
		opts = append(opts, engine.WithTaskHeader())
	}
	return opts
}
