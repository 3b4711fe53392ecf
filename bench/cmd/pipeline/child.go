package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// childEnv is the environment variable that makes the command a child: it
// holds the childSpec of the run, as JSON.
const childEnv = "SAMSA_BENCH_CHILD"

// childSpec is what one run of a variant does.
type childSpec struct {
	Workload       string
	Variant        string
	Brokers        []string
	Input          string
	Table          string // the join workload's table topic
	Output         string // empty for the consume variant, which writes nothing
	Group          string // the consumer group; samsa's job name
	CommitInterval time.Duration
	Threads        int // runner.Config.Threads, for the samsa variant
	// ExactlyOnce runs samsa under exactly-once at its default commit
	// interval (not CommitInterval); see variant.exactlyOnce.
	ExactlyOnce bool
	CPUProfile  string // a file to write a CPU profile of the run to; empty for none
}

// childReport is what a child prints on stdout when its run succeeded.
type childReport struct {
	Startup time.Duration // from the child's start to its first record
	Elapsed time.Duration // from its first record to the end of its run
	// Restored is the changelog records the samsa restore variant
	// restored; 0 for the other variants.
	Restored int64 `json:",omitempty"`
	// PeakRSS is the child's own peak resident set in bytes (VmHWM, Linux
	// only; 0 if unknown). The rusage of a child can report more: the
	// child starts as a vfork sharing this process's memory, and Linux
	// carries that memory's peak over the exec.
	PeakRSS int64 `json:",omitempty"`
}

// variant is one way of processing the input.
type variant struct {
	// run processes spec.Input up to the end offsets it sees at its start,
	// calling first.mark for each input record.
	run func(ctx context.Context, spec childSpec, first *firstRecord) error
	// writes says whether it writes to spec.Output.
	writes bool
	// rerun says that it runs the job the harness prepared (see
	// workload.restore) again, in that job's group, which it keeps.
	rerun bool
	// exactlyOnce runs the samsa job under exactly-once, at that
	// guarantee's default commit interval (100ms) rather than
	// --commit-interval: the comparison the exactly-once bar is about,
	// against the at-least-once variant at its default (5s).
	exactlyOnce bool
}

// firstRecord notes when a variant saw its first record: the start of its
// timed run. After the first record, marking costs one atomic load, in
// every variant alike. A variant that times itself (the restore) says so
// with timed instead.
type firstRecord struct {
	start    time.Time    // the child's start
	since    atomic.Int64 // nanoseconds from start to the first record; 0 until then
	elapsed  time.Duration
	restored int64
}

// timed gives the variant's own measure of its timed run, which ends at
// the variant's return, and of the records it restored.
func (f *firstRecord) timed(elapsed time.Duration, restored int64) {
	f.elapsed, f.restored = elapsed, restored
}

// mark notes that a record is being processed.
func (f *firstRecord) mark() {
	if f.since.Load() == 0 {
		f.since.CompareAndSwap(0, max(1, int64(time.Since(f.start))))
	}
}

// childMain is the command run as a child: it runs the variant specJSON
// names, prints a childReport and returns the exit code.
func childMain(specJSON string) int {
	start := time.Now()
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "pipeline child: %s: %v\n", childEnv, err)
		return 2
	}
	rep, err := runVariant(spec, start)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pipeline %s: %v\n", spec.Variant, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintf(os.Stderr, "pipeline %s: write report: %v\n", spec.Variant, err)
		return 1
	}
	return 0
}

// runVariant runs spec in this process, which started at start, with a
// CPU profile if the spec asks for one.
func runVariant(spec childSpec, start time.Time) (childReport, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	v, ok := workloads[spec.Workload].variants[spec.Variant]
	if !ok {
		return childReport{}, fmt.Errorf("unknown variant %q of workload %q", spec.Variant, spec.Workload)
	}
	if spec.CPUProfile != "" {
		f, err := os.Create(spec.CPUProfile)
		if err != nil {
			return childReport{}, fmt.Errorf("CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return childReport{}, fmt.Errorf("CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	first := &firstRecord{start: start}
	if err := v.run(ctx, spec, first); err != nil {
		return childReport{}, err
	}
	total := time.Since(start)
	rep := childReport{PeakRSS: peakRSSOfSelf()}
	if first.elapsed > 0 {
		rep.Startup, rep.Elapsed, rep.Restored = total-first.elapsed, first.elapsed, first.restored
		return rep, nil
	}
	since := time.Duration(first.since.Load())
	if since == 0 {
		return childReport{}, errors.New("the input had no record to consume")
	}
	rep.Startup, rep.Elapsed = since, total-since
	return rep, nil
}

// peakRSSOfSelf returns this process's peak resident set in bytes, from
// /proc (Linux); 0 elsewhere.
func peakRSSOfSelf() int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" && f[2] == "kB" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// result is one run of a variant, as the parent saw it.
type result struct {
	variant string
	run     int
	records int
	childReport
	wall      time.Duration // the child process, from start to exit
	cpu       time.Duration // the child's user and system CPU time
	peakRSS   int64         // the child's peak resident set, in bytes; 0 if unknown
	brokerCPU time.Duration // the broker's CPU time during the child's life; -1 if unknown
}

// perSecond is the run's throughput: input records over the timed run.
func (r result) perSecond() float64 { return float64(r.records) / r.Elapsed.Seconds() }

// coresUsed is how many cores the child and the broker kept busy on
// average over the child's life; -1 if the broker's CPU is unknown.
func (r result) coresUsed() float64 {
	if r.brokerCPU < 0 {
		return -1
	}
	return (r.cpu + r.brokerCPU).Seconds() / r.wall.Seconds()
}

// runChild runs spec in a child process: this command, re-executed with
// spec in its environment.
func runChild(ctx context.Context, spec childSpec, records int, brk *broker) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, fmt.Errorf("find this command to re-run it: %w", err)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return result{}, fmt.Errorf("encode the spec of %s: %w", spec.Group, err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr

	brokerBefore, brokerKnown := brk.cpu()
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	brokerAfter, _ := brk.cpu()
	if err != nil {
		return result{}, fmt.Errorf("run %s: %w", spec.Group, err)
	}
	res := result{variant: spec.Variant, records: records, wall: wall, brokerCPU: -1}
	if err := json.Unmarshal(stdout.Bytes(), &res.childReport); err != nil {
		return result{}, fmt.Errorf("run %s: its report %q: %w", spec.Group, stdout.Bytes(), err)
	}
	res.cpu, res.peakRSS = usage(cmd.ProcessState)
	if res.PeakRSS > 0 {
		res.peakRSS = res.PeakRSS
	}
	if brokerKnown {
		res.brokerCPU = brokerAfter - brokerBefore
	}
	return res, nil
}
