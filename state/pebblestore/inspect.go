package pebblestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble"

	"github.com/samsa-go/samsa/state"
)

// OpenReadOnly opens the store directory dir for reading, as tools do
// (the job binary's state command), and returns it with the identity it
// was created with. It writes nothing. A directory another process has
// open is ErrLocked; one with no identity file is ErrForeign.
func OpenReadOnly(dir string) (*DB, Identity, error) {
	var id Identity
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, id, fmt.Errorf("%w: %s has no %s file", ErrForeign, dir, identityFile)
	case err != nil:
		return nil, id, fmt.Errorf("pebblestore: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, id, fmt.Errorf("%w: %s: identity file: %v", ErrCorrupt, dir, err)
	}
	d := &DB{dir: dir, ownCache: pebble.NewCache(8 << 20), readOnly: true, fail: newFailure(dir)}
	db, err := pebble.Open(dir, &pebble.Options{Cache: d.ownCache, ReadOnly: true, Logger: logger{d.fail}})
	if err != nil {
		d.ownCache.Unref()
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "lock held by current process") {
			return nil, id, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
		}
		return nil, id, fmt.Errorf("%w: %s: %v", ErrCorrupt, dir, err)
	}
	d.db = db
	return d, id, nil
}

// ApproxBytes estimates the bytes store takes on disk. Data still in
// memtables is not counted.
func (d *DB) ApproxBytes(store string) (int64, error) {
	if d.closed {
		return 0, state.ErrClosed
	}
	lo := appendPrefix(nil, dataSpace, store)
	n, err := d.db.EstimateDiskUsage(lo, state.PrefixEnd(lo))
	if err != nil {
		return 0, fmt.Errorf("pebblestore: size of %s: %w", store, err)
	}
	return int64(n), nil
}
