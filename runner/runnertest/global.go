package runnertest

import (
	"fmt"

	"github.com/samsa-go/samsa/internal/engine"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/memstore"
	"github.com/samsa-go/samsa/stream"
)

// driverJoins is the driver's support for global tables and task headers.
type driverJoins struct {
	globals    *state.GlobalStores // the job's global tables, if any
	taskHeader bool
}

// TaskHeader makes the driver stamp every record a task writes with the
// header stream.TaskHeader naming the task, as the runner does with
// --task-header.
func TaskHeader() Option {
	return func(d *Driver) { d.joins.taskHeader = true }
}

// openGlobals creates the stores of the job's global tables, in memory.
func (d *Driver) openGlobals() {
	specs := d.topo.GlobalTables()
	if len(specs) == 0 {
		return
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Store
	}
	d.joins.globals = state.NewGlobalStores(memstore.New(), names)
}

// pipeGlobal appends rec to the topic of global table g and applies it to
// the table at once: every task sees it from the next record on.
func (d *Driver) pipeGlobal(g stream.GlobalSpec, rec stream.RawRecord) error {
	log := d.logs[g.Topic]
	if rec.Partition < 0 || int(rec.Partition) >= len(log) {
		return fmt.Errorf("runnertest: %s has %d partitions, not partition %d", g.Topic, len(log), rec.Partition)
	}
	rec.Topic = g.Topic
	rec.Offset = int64(len(log[rec.Partition]))
	rec.Key, rec.Value = clone(rec.Key), clone(rec.Value)
	if rec.Timestamp.IsZero() {
		rec.Timestamp = d.clock
	}
	log[rec.Partition] = append(log[rec.Partition], rec)
	var b state.GlobalBatch
	b.Put(g.Store, rec.Key, rec.Value)
	b.SetOffset(g.Store, rec.Partition, rec.Offset+1)
	if err := d.joins.globals.Apply(&b); err != nil {
		return fmt.Errorf("runnertest: global table %s: %w", g.Store, err)
	}
	return nil
}

// joinOptions are the engine options for global tables and task headers.
func (d *Driver) joinOptions() []engine.Option {
	var opts []engine.Option
	if d.joins.globals != nil {
		opts = append(opts, engine.WithGlobalStores(d.joins.globals))
	}
	if d.joins.taskHeader {
		opts = append(opts, engine.WithTaskHeader())
	}
	return opts
}
