package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/pebblestore"
	"github.com/samsa-go/samsa/stream"
)

// stateFlags are the flags of the state command.
type stateFlags struct {
	stateDir string
	httpAddr string
	task     string
	limit    int
	raw      bool
	withTask bool
}

func (c *cli) stateFlagSet() (*flagSet, *stateFlags) {
	f := newFlagSet("state")
	sf := &stateFlags{}
	f.String(&sf.stateDir, "state-dir", filepath.Join(os.TempDir(), "samsa", c.job.Name()), "`dir`ectory of the local stores to read, while no instance uses it")
	f.String(&sf.httpAddr, "http-addr", "", "read from the running instance serving HTTP at `host:port` (its --http-addr) instead of the state directory")
	f.String(&sf.task, "task", "", "read only the store of `task` (such as 1_3)")
	f.Int(&sf.limit, "limit", 0, "scan: at most this many keys (default: all from the state directory, 1000 over HTTP)")
	f.Bool(&sf.raw, "raw", false, "print keys and values as bytes (quoted where not plain text), not with the store's formats")
	f.Bool(&sf.withTask, "with-task", false, "scan: print the task holding each key first")
	return f, sf
}

// parseInterleaved parses args whose flags may come before, between or
// after positional arguments, applies the environment, and returns the
// positional arguments.
func (f *flagSet) parseInterleaved(args []string, env func(string) string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			return nil, f.parse(args, env) // the same error, worded as parse words it
		}
		if f.fs.NArg() == 0 {
			return pos, f.parse(nil, env) // the environment
		}
		rest := f.fs.Args()
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// stateCmd is the state command: state get <store> <key>, state scan
// <store> [prefix].
func (c *cli) stateCmd(ctx context.Context, args []string) error {
	f, sf := c.stateFlagSet()
	pos, err := f.parseInterleaved(args, c.env)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	topo, err := c.job.Build()
	if err != nil {
		return err
	}
	var stores []string
	for _, sub := range topo.Subtopologies() {
		for _, s := range sub.Stores {
			stores = append(stores, s.Name)
		}
	}
	for _, g := range topo.GlobalTables() {
		stores = append(stores, g.Store)
	}
	slices.Sort(stores)
	usage := fmt.Errorf("state: want `state get STORE KEY` or `state scan STORE [PREFIX]` (stores of %s: %s)", topo.Name(), strings.Join(stores, ", "))
	if len(pos) < 2 {
		return usageError{usage}
	}
	verb, store := pos[0], pos[1]
	var q *stateQuery
	switch {
	case verb == "get" && len(pos) == 3:
		q, err = parseStateQuery(topo, store, pos[2], true, "", "")
	case verb == "scan" && len(pos) <= 3:
		prefix := ""
		if len(pos) == 3 {
			prefix = pos[2]
		}
		q, err = parseStateQuery(topo, store, "", false, prefix, "")
	default:
		return usageError{usage}
	}
	if !slices.Contains(stores, store) {
		return usageError{fmt.Errorf("state: job %s has no store %q (its stores: %s)", topo.Name(), store, strings.Join(stores, ", "))}
	}
	if err != nil {
		return usageError{fmt.Errorf("state: %w", err)}
	}
	if sf.limit < 0 || sf.limit > maxScanLimit && sf.httpAddr != "" {
		return usageError{fmt.Errorf("flag --limit: %d: want 0 to %d", sf.limit, maxScanLimit)}
	}
	if sf.raw {
		q.keyFmt, q.valueFmt = nil, nil
	}

	var entries []stateEntry
	var where string
	if sf.httpAddr != "" {
		var truncated bool
		entries, truncated, err = readStateHTTP(ctx, sf, store, verb, pos)
		where = "the instance at " + sf.httpAddr
		if truncated {
			defer fmt.Fprintf(c.stderr, "%s: the instance returned the first %d keys only (see --limit)\n", topo.Name(), len(entries))
		}
	} else {
		entries, err = readStateDir(topo, sf, store, q)
		where = filepath.Join(sf.stateDir, "tasks")
	}
	if err != nil {
		return err
	}
	if verb == "get" {
		if len(entries) == 0 {
			return fmt.Errorf("state: store %s has no key %s (in %s)", store, stream.QuoteIfNeeded(q.key), where)
		}
		for _, e := range entries {
			if len(entries) > 1 {
				fmt.Fprintf(c.stdout, "%s\t", e.Task)
			}
			fmt.Fprintln(c.stdout, formatBytes(q.valueFmt, e.ValueBytes))
		}
		if len(entries) > 1 {
			fmt.Fprintf(c.stderr, "%s: the key is in the stores of several tasks: those not running here are stale copies of tasks that moved\n", topo.Name())
		}
		return nil
	}
	for _, e := range entries {
		if sf.withTask {
			fmt.Fprintf(c.stdout, "%s\t", e.Task)
		}
		fmt.Fprintf(c.stdout, "%s\t%s\n", formatBytes(q.keyFmt, e.KeyBytes), formatBytes(q.valueFmt, e.ValueBytes))
	}
	return nil
}

// readStateDir reads a store from the local store directories of its
// tasks, ordered by key (then task).
func readStateDir(topo *stream.Topology, sf *stateFlags, store string, q *stateQuery) ([]stateEntry, error) {
	spec, _ := topo.Store(store)
	if spec.InMemory {
		return nil, fmt.Errorf("state: store %s is kept in memory: only a running instance holds it; read it from one with --http-addr", store)
	}
	// The tasks whose directories hold the store: those of its
	// sub-topology under tasks/, or the instance's global tables under
	// global/.
	dir, prefix := filepath.Join(sf.stateDir, "tasks"), ""
	what := ""
	if _, ok := topo.GlobalTable(store); ok {
		dir, prefix, what = sf.stateDir, "global", "the global tables"
	} else {
		for _, s := range topo.Subtopologies() {
			for _, st := range s.Stores {
				if st.Name == store {
					prefix, what = strconv.Itoa(s.ID)+"_", "sub-topology "+strconv.Itoa(s.ID)
				}
			}
		}
	}
	if _, err := os.Stat(sf.stateDir); err != nil {
		return nil, fmt.Errorf("state: flag --state-dir: %w", err)
	}
	lock, err := lockStateDir(sf.stateDir)
	if err != nil {
		return nil, fmt.Errorf("%w; read from a running instance with --http-addr (its --http-addr)", err)
	}
	defer lock.Close()
	dirs, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("state: %w", err)
	}
	var tasks []string
	for _, d := range dirs {
		if d.IsDir() && strings.HasPrefix(d.Name(), prefix) && (prefix == "global") == (d.Name() == "global") && (sf.task == "" || sf.task == d.Name()) {
			tasks = append(tasks, d.Name())
		}
	}
	if len(tasks) == 0 {
		if sf.task != "" {
			what = "task " + sf.task
		}
		return nil, fmt.Errorf("state: no local store of %s under %s: no instance using this state directory ran its tasks", what, dir)
	}
	slices.SortFunc(tasks, compareTaskStrings)
	limit := sf.limit
	if limit == 0 {
		limit = -1
	}
	var out []stateEntry
	for _, task := range tasks {
		db, id, err := pebblestore.OpenReadOnly(filepath.Join(dir, task))
		if err != nil {
			return nil, fmt.Errorf("state: task %s: %w", task, err)
		}
		if id.Job != topo.Name() {
			db.Close()
			return nil, fmt.Errorf("state: %s holds the stores of job %q, not %q", filepath.Join(dir, task), id.Job, topo.Name())
		}
		err = q.read(backendStore{db, store}, func(k, v []byte) bool {
			out = append(out, stateEntry{Task: task, KeyBytes: k, ValueBytes: v})
			return true
		})
		db.Close()
		if err != nil {
			return nil, fmt.Errorf("state: task %s: %w", task, err)
		}
	}
	slices.SortStableFunc(out, func(a, b stateEntry) int { return bytes.Compare(a.KeyBytes, b.KeyBytes) })
	if limit >= 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// backendStore reads one store of a backend as a stream.Store.
type backendStore struct {
	db    *pebblestore.DB
	store string
}

func (b backendStore) Get(key []byte) ([]byte, error) { return b.db.Get(b.store, key) }
func (b backendStore) Put(key, value []byte) error    { return errors.New("read-only") }
func (b backendStore) Delete(key []byte) error        { return errors.New("read-only") }
func (b backendStore) Range(start, end []byte) stream.Iterator {
	return b.db.NewIter(b.store, start, end)
}

func (b backendStore) Prefix(prefix []byte) stream.Iterator {
	return b.db.NewIter(b.store, prefix, state.PrefixEnd(prefix))
}

// readStateHTTP reads a store from a running instance's /state endpoint.
func readStateHTTP(ctx context.Context, sf *stateFlags, store, verb string, pos []string) (entries []stateEntry, truncated bool, err error) {
	v := url.Values{}
	switch {
	case verb == "get":
		v.Set("key", pos[2])
	case len(pos) == 3:
		v.Set("prefix", pos[2])
	}
	if sf.limit > 0 {
		v.Set("limit", strconv.Itoa(sf.limit))
	}
	if sf.task != "" {
		v.Set("task", sf.task)
	}
	u := (&url.URL{Scheme: "http", Host: sf.httpAddr, Path: "/state/" + store, RawQuery: v.Encode()}).String()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, fmt.Errorf("state: flag --http-addr %s: %w", sf.httpAddr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("state: %w (is the instance running with --http-addr %s?)", err, sf.httpAddr)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return nil, false, fmt.Errorf("state: read from %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var he httpError
		if json.Unmarshal(body, &he) == nil && he.Error != "" {
			return nil, false, fmt.Errorf("state: the instance at %s: %s", sf.httpAddr, he.Error)
		}
		return nil, false, fmt.Errorf("state: GET %s: %s", u, resp.Status)
	}
	var sr stateResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		return nil, false, fmt.Errorf("state: GET %s: %w", u, err)
	}
	return sr.Entries, sr.Truncated, nil
}
