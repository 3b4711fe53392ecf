package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/samsa-go/samsa/stream"
)

// The HTTP endpoint of a running instance (--http-addr), besides /metrics:
//
//	/healthz  200 while the instance runs; 503 once it is stopping
//	/readyz   200 once it has joined its group and restored its tasks'
//	          stores, while the brokers can be reached; 503 with the
//	          reason otherwise
//	/status   JSON: the instance's tasks, their input positions and lag,
//	          their stores' changelog offsets and sizes
//	/state/{store}?key=K | ?prefix=P [&limit=N] [&task=ID]
//	          JSON: a key, or the first keys (1,000 unless limit says) with
//	          a prefix, in key order, of a store of the instance's tasks:
//	          what the job binary's state command reads. Values include
//	          changes not committed yet, as the tasks see them.

// stateReadWait bounds how long a state read waits for the loop to pause
// between batches (it may be restoring, or committing to slow brokers).
const stateReadWait = 5 * time.Second

// Limits of a state scan over HTTP.
const (
	defaultScanLimit = 1000
	maxScanLimit     = 100_000
)

// routes adds the instance's endpoints to mux. ctx ends when the instance
// starts stopping.
func (r *Runner) routes(ctx context.Context, mux *http.ServeMux) {
	o := r.metrics.view
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if ctx.Err() != nil {
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := r.ready(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		v := o.view.Load()
		if v == nil {
			v = &instanceView{Job: r.topo.Name(), State: "starting", Tasks: []taskView{}}
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /state/{store}", r.serveState)
}

// ready returns nil if the instance is ready to process, or why not.
func (r *Runner) ready(ctx context.Context) error {
	v := r.metrics.view.view.Load()
	switch {
	case ctx.Err() != nil:
		return errors.New("stopping")
	case v == nil || v.State == "joining":
		return errors.New("joining the consumer group")
	case v.State == "restoring":
		var restoring []string
		for _, t := range v.Tasks {
			if t.State == "restoring" {
				restoring = append(restoring, t.ID)
			}
		}
		return fmt.Errorf("restoring the stores of tasks %v", restoring)
	}
	if r.brokers != nil {
		return r.brokers.check()
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// stateEntry is one key of a store, as /state returns it: as text (with
// the store's formats if the job recorded them) and as bytes.
type stateEntry struct {
	Task       string `json:"task"`
	Key        string `json:"key"`
	Value      string `json:"value"`
	KeyBytes   []byte `json:"key_bytes"`
	ValueBytes []byte `json:"value_bytes"`
}

// stateResponse is the body of /state.
type stateResponse struct {
	Store     string       `json:"store"`
	Entries   []stateEntry `json:"entries"`
	Truncated bool         `json:"truncated,omitempty"` // more entries than the limit
	Tasks     []string     `json:"tasks"`               // the tasks read
}

type httpError struct {
	Error string `json:"error"`
}

func (r *Runner) serveState(w http.ResponseWriter, req *http.Request) {
	store := req.PathValue("store")
	_, global := r.topo.GlobalTable(store)
	if _, ok := r.topo.Store(store); !ok && !global {
		writeJSON(w, http.StatusNotFound, httpError{fmt.Sprintf("job %s has no store %q", r.topo.Name(), store)})
		return
	}
	q := req.URL.Query()
	sel, err := parseStateQuery(r.topo, store, q.Get("key"), q.Has("key"), q.Get("prefix"), q.Get("limit"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, httpError{err.Error()})
		return
	}
	m := r.metrics.view.member.Load()
	if m == nil {
		writeJSON(w, http.StatusServiceUnavailable, httpError{"starting: no tasks yet"})
		return
	}
	resp := stateResponse{Store: store, Entries: []stateEntry{}, Tasks: []string{}}
	if global {
		// A global table is the instance's, not a task's; its store
		// serializes its readers and its updater.
		if m.globals == nil || m.globals.Store(store) == nil {
			writeJSON(w, http.StatusServiceUnavailable, httpError{"starting: the global tables are not open yet"})
			return
		}
		resp.Tasks = append(resp.Tasks, "global")
		if err := sel.read(m.globals.Store(store), func(k, v []byte) bool {
			if len(resp.Entries) == sel.limit {
				resp.Truncated = true
				return false
			}
			resp.Entries = append(resp.Entries, sel.entry("global", k, v))
			return true
		}); err != nil {
			writeJSON(w, http.StatusInternalServerError, httpError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), stateReadWait)
	defer cancel()
	if !lockWithin(ctx, &m.mu) {
		writeJSON(w, http.StatusServiceUnavailable, httpError{"busy (restoring, or committing to slow brokers): try again"})
		return
	}
	defer m.mu.Unlock()
	var restoring []string
	for _, id := range slicesSortedTasks(m.tasks) {
		t := m.tasks[id]
		if q.Has("task") && q.Get("task") != id.String() {
			continue
		}
		if t.stores == nil || t.stores.Store(store) == nil {
			continue
		}
		if t.restoring {
			restoring = append(restoring, id.String())
			continue
		}
		resp.Tasks = append(resp.Tasks, id.String())
		n := 0
		if err := sel.read(t.stores.Store(store), func(k, v []byte) bool {
			if n == sel.limit {
				resp.Truncated = true
				return false
			}
			n++
			resp.Entries = append(resp.Entries, sel.entry(id.String(), k, v))
			return true
		}); err != nil {
			writeJSON(w, http.StatusInternalServerError, httpError{fmt.Sprintf("task %s: %v", id, err)})
			return
		}
	}
	// The first keys in key order, whichever tasks hold them.
	slices.SortStableFunc(resp.Entries, func(a, b stateEntry) int { return bytes.Compare(a.KeyBytes, b.KeyBytes) })
	if len(resp.Entries) > sel.limit {
		resp.Entries, resp.Truncated = resp.Entries[:sel.limit], true
	}
	if len(resp.Entries) == 0 && len(restoring) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, httpError{fmt.Sprintf("the store of tasks %v is being restored: try again", restoring)})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// lockWithin locks mu, giving up when ctx ends.
func lockWithin(ctx context.Context, mu interface{ TryLock() bool }) bool {
	for {
		if mu.TryLock() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// stateQuery is what a state read selects: one key or a prefix, parsed
// with the store's text formats when the job recorded them.
type stateQuery struct {
	key, prefix []byte
	get         bool
	limit       int
	keyFmt      stream.TextFormat // nil: bytes
	valueFmt    stream.TextFormat
}

func parseStateQuery(topo *stream.Topology, store, key string, hasKey bool, prefix, limit string) (*stateQuery, error) {
	q := &stateQuery{limit: defaultScanLimit}
	q.keyFmt, q.valueFmt, _ = topo.StoreFormat(store)
	if limit != "" {
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 || n > maxScanLimit {
			return nil, fmt.Errorf("limit %q: want 1 to %d", limit, maxScanLimit)
		}
		q.limit = n
	}
	switch {
	case hasKey && prefix != "":
		return nil, errors.New("give key or prefix, not both")
	case hasKey:
		q.get = true
		if q.keyFmt != nil {
			b, err := q.keyFmt.Parse(key)
			if err != nil {
				return nil, fmt.Errorf("key %q is not a key of store %s: %w", key, store, err)
			}
			q.key = b
		} else {
			q.key = []byte(stream.UnquoteIfQuoted(key))
		}
	default:
		q.prefix = []byte(stream.UnquoteIfQuoted(prefix))
	}
	return q, nil
}

// read calls fn with the selected keys of s, in key order, until fn
// returns false.
func (q *stateQuery) read(s stream.Store, fn func(k, v []byte) bool) error {
	if q.get {
		v, err := s.Get(q.key)
		if errors.Is(err, stream.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		fn(q.key, v)
		return nil
	}
	it := s.Prefix(q.prefix)
	for it.Next() {
		if !fn(it.Key(), it.Value()) {
			break
		}
	}
	return errors.Join(it.Err(), it.Close())
}

func (q *stateQuery) entry(task string, k, v []byte) stateEntry {
	return stateEntry{Task: task, Key: formatBytes(q.keyFmt, k), Value: formatBytes(q.valueFmt, v), KeyBytes: k, ValueBytes: v}
}

// formatBytes writes b with f, or as quoted bytes if there is no format
// or b does not decode with it.
func formatBytes(f stream.TextFormat, b []byte) string {
	if f != nil {
		if s, err := f.Format(b); err == nil {
			return s
		}
	}
	return stream.QuoteIfNeeded(b)
}
