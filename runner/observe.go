package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/samsa-go/samsa/stream"
)

// How often the loop publishes its view, measures lag and store sizes.
const (
	publishEvery = time.Second
	sizesEvery   = 30 * time.Second
	maxLagEvery  = 5 * time.Second
	lagTimeout   = 2 * time.Second
)

// Catching up: an instance more than catchUpLag records behind logs its
// progress every catchUpLogEvery, and once it is less than caughtUpLag
// behind, that it caught up.
const (
	catchUpLag      = 10_000
	caughtUpLag     = 1_000
	catchUpLogEvery = 10 * time.Second
)

// observer is what an instance shows of itself besides its logs: the view
// its HTTP endpoint serves, readiness, lag and store-size metrics, and
// the progress of a catch-up (after a replay, a restart, an outage). The
// loop feeds it through observeLocked; the HTTP handlers read what it
// published. The published view is safe for concurrent use; the rest
// belongs to the loop.
type observer struct {
	view   atomic.Pointer[instanceView]
	member atomic.Pointer[member] // for state reads over HTTP

	lag        *prometheus.GaugeVec // by topic, partition
	storeBytes *prometheus.GaugeVec // by store, task
	tasks      prometheus.Gauge     // owned
	rebalances prometheus.Counter   // generations this instance went through
	gaugeKeys  map[string][]string  // label values set on lag and storeBytes, to delete stale ones
	catchUp    catchUp              // progress log
	last       struct{ publish, sizes, lag time.Time }
	sig        taskSignature            // tasks and their states at the last publish
	generation int32                    // the group generation seen last
	ends       map[topicPartition]int64 // the last stable offsets measured last
	behind     map[topicPartition]int64 // lag measured last, where the position was not known to the task
	sizes      map[string]int64         // "store/task" -> bytes
}

// instanceView is the JSON view of an instance at /status.
type instanceView struct {
	Job        string     `json:"job"`
	MemberID   string     `json:"member_id"`
	Generation int32      `json:"generation"`
	State      string     `json:"state"` // joining, restoring or running
	Tasks      []taskView `json:"tasks"`
	// Lag is the records the instance's tasks have yet to process, as
	// of LagAt: the sum over the partitions whose lag is known.
	Lag        int64     `json:"lag"`
	LagAt      time.Time `json:"lag_at,omitzero"`
	RecordsIn  int64     `json:"records_in"`
	RecordsOut int64     `json:"records_out"`
	LastCommit time.Time `json:"last_commit,omitzero"`
	At         time.Time `json:"at"` // when the loop published this view
}

type taskView struct {
	ID     string      `json:"id"`
	State  string      `json:"state"` // restoring or running
	Inputs []inputView `json:"inputs"`
	Stores []storeView `json:"stores,omitempty"`
}

type inputView struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Position  int64  `json:"position"` // the next offset to process; -1 if not known yet
	End       int64  `json:"end"`      // the last stable offset; -1 if not measured yet
	Lag       int64  `json:"lag"`      // -1 if not known
}

type storeView struct {
	Name      string `json:"name"`
	Changelog string `json:"changelog"`
	InMemory  bool   `json:"in_memory,omitempty"`
	// Offset is the changelog offset the local store reflects.
	Offset int64 `json:"offset"`
	Bytes  int64 `json:"bytes"` // approximate; -1 if not measured yet
}

type topicPartition struct {
	topic     string
	partition int32
}

func newObserver(job string, reg *prometheus.Registry) *observer {
	labels := prometheus.Labels{"job": job}
	o := &observer{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "samsa_consumer_lag_records", ConstLabels: labels,
			Help: "Records of an input partition the instance has yet to process: the partition's last stable offset minus the next offset to process.",
		}, []string{"topic", "partition"}),
		storeBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "samsa_store_bytes", ConstLabels: labels,
			Help: "Approximate size of a task's local store: on disk for Pebble, keys and values for memory stores.",
		}, []string{"store", "task"}),
		tasks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "samsa_tasks", ConstLabels: labels, Help: "Tasks the instance owns.",
		}),
		rebalances: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "samsa_rebalances_total", ConstLabels: labels,
			Help: "Consumer-group generations the instance joined: a cooperative rebalance takes one or two.",
		}),
		gaugeKeys: map[string][]string{},
		ends:      map[topicPartition]int64{},
		behind:    map[topicPartition]int64{},
		sizes:     map[string]int64{},
	}
	reg.MustRegister(o.lag, o.storeBytes, o.tasks, o.rebalances)
	return o
}

// observeLocked publishes the member's view when something changed or a
// second passed, measures lag and store sizes when they are due, and logs
// the progress of a catch-up. The loop calls it with m.mu held.
func (m *member) observeLocked() {
	o := m.r.metrics.view
	if o.member.Swap(m) != m {
		o.reset() // a new Run of the Runner
	}
	now := time.Now()
	if _, gen := m.cl.GroupMetadata(); gen > o.generation {
		o.generation = gen
		o.rebalances.Inc()
	}
	sig := m.signatureLocked()
	lagDue := now.Sub(o.last.lag) >= min(maxLagEvery, max(m.r.cfg.CommitInterval, 100*time.Millisecond))
	if sig == o.sig && !lagDue && now.Sub(o.last.publish) < publishEvery {
		return
	}
	if now.Sub(o.last.sizes) >= sizesEvery || sig != o.sig {
		o.last.sizes = now
		m.measureSizesLocked()
	}
	o.sig = sig
	if lagDue {
		o.last.lag = now
		m.measureLagLocked()
	}
	o.last.publish = now
	v := m.viewLocked(now)
	o.view.Store(v)
	o.tasks.Set(float64(len(v.Tasks)))
	if lagDue && !v.LagAt.IsZero() {
		o.catchUp.observe(m.log, now, v, m.in.Load())
	}
}

// taskSignature sums up a member's tasks and their states, cheaply: the
// view is published at once when it changes (a task restored, a task
// added or dropped), and every publishEvery anyway.
type taskSignature struct {
	joined          bool
	tasks, restored int
}

func (m *member) signatureLocked() taskSignature {
	sig := taskSignature{joined: m.assignedOnce, tasks: len(m.tasks)}
	for _, t := range m.tasks {
		if !t.restoring {
			sig.restored++
		}
	}
	return sig
}

// reset forgets what the observer measured for an earlier member.
func (o *observer) reset() {
	o.catchUp = catchUp{}
	o.last.publish, o.last.sizes, o.last.lag = time.Time{}, time.Time{}, time.Time{}
	o.sig, o.generation = taskSignature{}, 0
	clear(o.ends)
	clear(o.behind)
	clear(o.sizes)
}

func slicesSortedTasks(tasks map[stream.TaskID]*task) []stream.TaskID {
	ids := make([]stream.TaskID, 0, len(tasks))
	for id := range tasks {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareTaskIDs)
	return ids
}

// viewLocked builds the member's view.
func (m *member) viewLocked(now time.Time) *instanceView {
	o := m.r.metrics.view
	v := &instanceView{
		Job: m.r.topo.Name(), State: "joining", Tasks: []taskView{},
		RecordsIn: m.in.Load(), RecordsOut: m.out.Load(), LastCommit: m.lastCommit, At: now, LagAt: o.last.lag,
	}
	v.MemberID, v.Generation = m.cl.GroupMetadata()
	if m.assignedOnce {
		v.State = "running"
	}
	for _, id := range slicesSortedTasks(m.tasks) {
		t := m.tasks[id]
		tv := taskView{ID: id.String(), State: "running", Inputs: []inputView{}}
		if t.restoring {
			tv.State, v.State = "restoring", "restoring"
		}
		for _, in := range t.inputs {
			iv := inputView{Topic: in.topic, Partition: id.Partition, Position: in.next.Offset, End: -1, Lag: -1}
			tp := topicPartition{in.topic, id.Partition}
			if end, ok := o.ends[tp]; ok {
				iv.End = end
				if iv.Position >= 0 {
					iv.Lag = max(0, end-iv.Position)
				} else if lag, ok := o.behind[tp]; ok {
					iv.Lag = lag
				}
				v.Lag += max(0, iv.Lag)
			}
			tv.Inputs = append(tv.Inputs, iv)
		}
		if t.stores != nil {
			for _, st := range t.stores.Stores() {
				spec := st.Spec()
				sv := storeView{Name: spec.Name, Changelog: m.r.topo.ChangelogTopic(spec.Name), InMemory: spec.InMemory, Offset: -1, Bytes: -1}
				if off, err := t.stores.Backend().Offset(spec.Name); err == nil {
					sv.Offset = off
				}
				if n, ok := o.sizes[spec.Name+"/"+tv.ID]; ok {
					sv.Bytes = n
				}
				tv.Stores = append(tv.Stores, sv)
			}
		}
		v.Tasks = append(v.Tasks, tv)
	}
	return v
}

// sizer is implemented by the backends that can tell a store's size.
type sizer interface {
	ApproxBytes(store string) (int64, error)
}

// ApproxBytes implements sizer for the backend that holds store.
func (s *splitBackend) ApproxBytes(store string) (int64, error) {
	if b, ok := s.byStore[store].(sizer); ok {
		return b.ApproxBytes(store)
	}
	return 0, errors.New("runner: store size unknown")
}

// measureSizesLocked measures the stores of the member's tasks.
func (m *member) measureSizesLocked() {
	o := m.r.metrics.view
	clear(o.sizes)
	var keys []string
	for id, t := range m.tasks {
		if t.stores == nil || t.restoring {
			continue
		}
		for _, st := range t.stores.Stores() {
			name := st.Spec().Name
			n, err := t.stores.Backend().(sizer).ApproxBytes(name)
			if err != nil {
				continue
			}
			o.sizes[name+"/"+id.String()] = n
			o.storeBytes.WithLabelValues(name, id.String()).Set(float64(n))
			keys = append(keys, name+"\x00"+id.String())
		}
	}
	o.forget(o.storeBytes, "sizes", keys)
}

// forget deletes the series of vec set before under kind whose labels are
// not in keys (each the label values joined by NUL): those of tasks that
// moved away.
func (o *observer) forget(vec *prometheus.GaugeVec, kind string, keys []string) {
	for _, old := range o.gaugeKeys[kind] {
		if !slices.Contains(keys, old) {
			vec.DeleteLabelValues(strings.Split(old, "\x00")...)
		}
	}
	o.gaugeKeys[kind] = keys
}

// measureLagLocked asks the brokers for the last stable offsets of the
// member's input partitions. Positions not known yet (a task that has not
// processed a record) are taken from the group's commits, or the start.
func (m *member) measureLagLocked() {
	o := m.r.metrics.view
	topics := map[string]bool{}
	unknown := false
	for _, t := range m.tasks {
		for _, in := range t.inputs {
			topics[in.topic] = true
			unknown = unknown || in.next.Offset < 0
		}
	}
	if m.r.brokers != nil && m.r.brokers.check() != nil {
		return // no lag to measure while the brokers are away
	}
	if len(topics) == 0 {
		clear(o.ends)
		clear(o.behind)
		o.forget(o.lag, "lag", nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), lagTimeout)
	defer cancel()
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	ends, err := m.adm.ListCommittedOffsets(ctx, names...)
	if err != nil {
		m.log.Debug("measure lag: list end offsets", "error", err)
		return
	}
	var committed kadm.OffsetResponses
	var starts kadm.ListedOffsets
	if unknown {
		committed, err = m.adm.FetchOffsets(ctx, m.r.topo.Name())
		if err == nil && !errors.Is(committed.Error(), kerr.GroupIDNotFound) {
			err = committed.Error()
		}
		if err == nil {
			starts, err = m.adm.ListStartOffsets(ctx, names...)
		}
		if err != nil {
			m.log.Debug("measure lag: committed and start offsets", "error", err)
		}
	}
	clear(o.ends)
	clear(o.behind)
	var keys []string
	for id, t := range m.tasks {
		for _, in := range t.inputs {
			end, ok := ends.Lookup(in.topic, id.Partition)
			if !ok || end.Err != nil {
				continue
			}
			tp := topicPartition{in.topic, id.Partition}
			o.ends[tp] = end.Offset
			pos := in.next.Offset
			if pos < 0 {
				if c, ok := committed.Lookup(in.topic, id.Partition); ok && c.Err == nil && c.At >= 0 {
					pos = c.At
				} else if s, ok := starts.Lookup(in.topic, id.Partition); ok && s.Err == nil {
					pos = s.Offset
				} else {
					continue
				}
				o.behind[tp] = max(0, end.Offset-pos)
			}
			p := strconv.Itoa(int(id.Partition))
			o.lag.WithLabelValues(in.topic, p).Set(float64(max(0, end.Offset-pos)))
			keys = append(keys, in.topic+"\x00"+p)
		}
	}
	o.forget(o.lag, "lag", keys)
}

// catchUp logs the progress of an instance that is far behind: how many
// records are left, how fast they go, when it will be done.
type catchUp struct {
	active          bool
	began, lastLog  time.Time
	beganIn         int64 // records processed when it began
	prevAt          time.Time
	prevLag, prevIn int64
	lagRate, inRate float64 // records per second, smoothed
	haveRates       bool
}

// observe takes a new measurement: v's lag, in records processed so far.
func (c *catchUp) observe(log interface {
	Info(string, ...any)
}, now time.Time, v *instanceView, in int64) {
	lag := v.Lag
	if !c.prevAt.IsZero() {
		if dt := now.Sub(c.prevAt).Seconds(); dt > 0 {
			lagRate, inRate := float64(c.prevLag-lag)/dt, float64(in-c.prevIn)/dt
			if c.haveRates {
				// An exponential average over about the last 5 samples.
				lagRate, inRate = 0.3*lagRate+0.7*c.lagRate, 0.3*inRate+0.7*c.inRate
			}
			c.lagRate, c.inRate, c.haveRates = lagRate, inRate, true
		}
	}
	c.prevAt, c.prevLag, c.prevIn = now, lag, in
	switch {
	case !c.active && lag >= catchUpLag:
		c.active, c.began, c.beganIn, c.lastLog = true, now, in, now
		log.Info("catching up", c.fields(v, lag)...)
	case c.active && lag < caughtUpLag:
		c.active = false
		log.Info("caught up", "lag", lag, "records", in-c.beganIn, "took", now.Sub(c.began).Round(100*time.Millisecond).String())
	case c.active && now.Sub(c.lastLog) >= catchUpLogEvery:
		c.lastLog = now
		log.Info("catching up", c.fields(v, lag)...)
	}
}

// fields are the key-value pairs of a "catching up" log line: the lag,
// the partitions furthest behind, the processing rate and the time left.
func (c *catchUp) fields(v *instanceView, lag int64) []any {
	var behind []inputView
	for _, t := range v.Tasks {
		for _, in := range t.Inputs {
			if in.Lag > 0 {
				behind = append(behind, in)
			}
		}
	}
	slices.SortFunc(behind, func(a, b inputView) int {
		return cmp.Or(cmp.Compare(b.Lag, a.Lag), strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	var most []string
	for _, in := range behind[:min(3, len(behind))] {
		most = append(most, fmt.Sprintf("%s/%d=%d", in.Topic, in.Partition, in.Lag))
	}
	left := "unknown"
	switch {
	case !c.haveRates:
	case c.lagRate > 0:
		left = time.Duration(float64(lag) / c.lagRate * float64(time.Second)).Round(time.Second).String()
	default:
		left = "not shrinking: input arrives as fast as it is processed"
	}
	rate := "unknown"
	if c.haveRates {
		rate = fmt.Sprintf("%.0f/s", c.inRate)
	}
	return []any{"lag", lag, "partitions_behind", len(behind), "most_behind", strings.Join(most, ","), "rate", rate, "left", left}
}

// countIn counts the records of in that task t processed since it last
// counted them.
func (t *task) countIn(in *input) {
	if in.processed == 0 {
		return
	}
	if in.records == nil {
		in.records = t.m.r.metrics.recordsIn.WithLabelValues(in.topic, t.ID().String())
	}
	in.records.Add(float64(in.processed))
	in.processed = 0
}

// countOut counts n records task t wrote to topic.
func (t *task) countOut(topic string, n int64) {
	c, ok := t.out[topic]
	if !ok {
		if t.out == nil {
			t.out = map[string]prometheus.Counter{}
		}
		c = t.m.r.metrics.recordsOut.WithLabelValues(topic, t.ID().String())
		t.out[topic] = c
	}
	c.Add(float64(n))
}
