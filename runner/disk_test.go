//go:build linux

package runner_test

// Disk trouble under the state directory: a directory that cannot be
// written at start, one made read-only while the job runs, and a disk
// that fills up. The job stops with an error naming the directory and
// the cause; the input offsets it committed never run ahead of the
// changelog; and a restart once the directory is usable again restores
// the stores from their changelogs and counts on exactly. The mounts
// take root (internal/testfs skips the tests otherwise).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/internal/testfs"
	"github.com/samsa-go/samsa/runner"
)

// At start: a state directory that is read-only, one whose parent is a
// file, and a task directory that is read-only. Each stops the job at
// once with an error naming the directory and the cause; none is taken
// for a damaged store and wiped.
func TestDiskStateDirUnwritableAtStart(t *testing.T) {
	t.Parallel()
	e := stSetup(t, "in", "out")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(t.TempDir(), "ro")
	if err := os.MkdirAll(readOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	testfs.ReadOnlyOver(t, readOnly)
	roTask := t.TempDir()
	for p := range stPartitions {
		dir := filepath.Join(roTask, "tasks", fmt.Sprintf("0_%d", p))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		testfs.ReadOnlyOver(t, dir)
	}

	for _, tc := range []struct {
		name, stateDir, where, cause string
	}{
		{"read-only", readOnly, readOnly, "read-only file system"},
		{"parent is a file", filepath.Join(file, "state"), filepath.Join(file, "state"), "not a directory"},
		{"read-only task directory", roTask, filepath.Join(roTask, "tasks", "0_"), "read-only file system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := stNewLog(t)
			r, err := runner.New(stCountJob("diskstart", nil), e.config(tc.stateDir, log.logger("diskstart")))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), stWait)
			defer cancel()
			err = r.Run(ctx)
			if ctx.Err() != nil {
				t.Fatalf("Run did not stop within %s", stWait)
			}
			if err == nil || !strings.Contains(err.Error(), tc.where) || !strings.Contains(err.Error(), tc.cause) {
				t.Fatalf("Run: %v; want an error naming %s and %q", err, tc.where, tc.cause)
			}
			t.Logf("Run: %v", err)
			if w := log.find("wiping the local store directory; the stores will be restored from their changelogs"); len(w) > 0 {
				t.Errorf("an unwritable directory was taken for a damaged one and wiped: %v", w)
			}
		})
	}
}

// diskKey is key i of the disk tests: long, and random to Pebble's
// compression, so that a few thousand keys outgrow a small disk.
func diskKey(i int) string {
	var sb strings.Builder
	sb.WriteString(stKey(i))
	for j := 0; sb.Len() < 600; j++ {
		h := sha256.Sum256([]byte(strconv.Itoa(i) + "/" + strconv.Itoa(j)))
		sb.WriteString(hex.EncodeToString(h[:]))
	}
	return sb.String()
}

// produceKeys writes one record for each key from lo to hi-1, twice, and
// adds them to want.
func (e *stEnv) produceKeys(lo, hi int, want map[string]int64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stWait)
	defer cancel()
	for round := range 2 {
		var recs []*kgo.Record
		for i := lo; i < hi; i++ {
			k := diskKey(i)
			want[k]++
			recs = append(recs, &kgo.Record{Topic: "in", Key: []byte(k), Value: fmt.Appendf(nil, "r%d", round)})
		}
		if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			e.t.Fatalf("produce: %v", err)
		}
	}
}

// diskJob runs testdata/statejob on stateDir.
func (e *stEnv) diskJob(t *testing.T, bin, name, stateDir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"run",
		"--brokers", e.addr,
		"--state-dir", stateDir,
		"--commit-interval", "100ms",
		"--session-timeout", "1s",
		"--cache-bytes", "65536",
		"--memtable-bytes", "1048576",
		"--block-cache-bytes", "4194304",
		"--log-json",
	}, extra...)
	return procStart(t, name, bin, nil, args...)
}

// checkCommittedBehindChangelog checks that the changelog offset committed
// with each input partition's offset is within the changelog.
func (e *stEnv) checkCommittedBehindChangelog(t *testing.T) {
	t.Helper()
	ends := e.ends("statejob-counts-changelog")
	_, metas := e.committed("statejob", "in")
	for p, meta := range metas {
		for _, f := range strings.Split(meta, ";") {
			if v, ok := strings.CutPrefix(f, stStore+"="); ok {
				off, _ := strconv.ParseInt(v, 10, 64)
				if off > ends[p] {
					t.Errorf("partition %d: committed with changelog offset %d, past the changelog's end %d", p, off, ends[p])
				}
			}
		}
	}
}

// diskStopped waits for a job that must stop by itself on disk trouble,
// and checks its exit code and error.
func diskStopped(t *testing.T, p *proc, where, cause string) {
	t.Helper()
	if code := p.wait(t, stWait); code == 0 {
		t.Fatalf("%s exited with code 0 after disk trouble", p.name)
	}
	// The job binary's last words: "statejob: " and the error.
	stderr := p.stderr.String()
	i := strings.LastIndex(stderr, "statejob: ")
	if i < 0 {
		t.Fatalf("%s: no error on stderr:\n%s", p.name, procTail(stderr, 20))
	}
	errLine := stderr[i:]
	if !strings.Contains(errLine, where) || !strings.Contains(errLine, cause) || !strings.Contains(errLine, "task 0_") {
		t.Fatalf("%s: the error does not name the task, the directory %s and the cause %q:\n%s", p.name, where, cause, errLine)
	}
	t.Logf("%s stopped:\n%s", p.name, errLine)
}

// diskRestart runs the job to the end of its input on stateDir, and
// checks that its state is exact and was restored from the changelog.
func (e *stEnv) diskRestart(t *testing.T, bin, stateDir string, want map[string]int64) {
	t.Helper()
	p := e.diskJob(t, bin, "statejob restart", stateDir, "--until-end")
	if code := p.wait(t, stWait); code != 0 {
		t.Fatalf("the restart exited with code %d:\n%s", code, procTail(p.stderr.String(), 20))
	}
	restored, _ := stRestored(stParseLog(p.stderr.String()))
	t.Logf("the restart restored %d changelog records", restored)
	if restored == 0 {
		t.Errorf("the restart restored nothing from the changelog")
	}
	e.checkChangelogAndOutput(t, "statejob", "out", want)
	e.checkLocalStores(t, stateDir, "statejob", "in", 0, want)
}

// The task directories made read-only while the job runs: the stores'
// data waits in memtables until one is full, whose flush fails; the next
// commit stops the job.
func TestDiskStateDirReadOnlyMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a job binary; skipped with -short")
	}
	t.Parallel()
	e := stSetup(t, "in", "out")
	bin := procBuild(t, "./testdata/statejob")
	want := map[string]int64{}
	e.produceKeys(0, 500, want)
	dir := t.TempDir()
	p := e.diskJob(t, bin, "statejob", dir)
	procWaitFor(t, stWait, "the first records to be committed", func() bool {
		p.running(t)
		return e.allCommitted("statejob", "in")
	})
	var undo []func()
	for part := range stPartitions {
		undo = append(undo, testfs.ReadOnlyOver(t, filepath.Join(dir, "tasks", fmt.Sprintf("0_%d", part))))
	}
	// 1.5 MB of keys per task: more than its memtable.
	e.produceKeys(500, 10_500, want)
	diskStopped(t, p, filepath.Join(dir, "tasks", "0_"), "read-only file system")
	e.checkCommittedBehindChangelog(t)

	for _, u := range undo {
		u()
	}
	e.diskRestart(t, bin, dir, want)
}

// A 4 MiB state directory that the stores outgrow: the job stops with
// "no space left on device"; once the file system has room, a restart on
// the same directory restores the stores and counts on exactly.
func TestDiskStateDirFull(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a job binary; skipped with -short")
	}
	t.Parallel()
	e := stSetup(t, "in", "out")
	bin := procBuild(t, "./testdata/statejob")
	dir := filepath.Join(t.TempDir(), "state")
	testfs.Tmpfs(t, dir, "4m")
	want := map[string]int64{}
	// 6 MB of keys.
	e.produceKeys(0, 10_000, want)
	p := e.diskJob(t, bin, "statejob", dir)
	diskStopped(t, p, filepath.Join(dir, "tasks", "0_"), "no space left on device")
	e.checkCommittedBehindChangelog(t)

	testfs.Resize(t, dir, "256m")
	e.diskRestart(t, bin, dir, want)
}
