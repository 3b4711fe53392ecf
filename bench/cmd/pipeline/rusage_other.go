//go:build !unix

package main

import (
	"os"
	"time"
)

// usage returns the CPU time (user and system) of an exited process; the
// peak resident set is unknown here (0).
func usage(ps *os.ProcessState) (cpu time.Duration, peakRSS int64) {
	return ps.UserTime() + ps.SystemTime(), 0
}
