package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// rowFormat lays out the table of runs, one row per run of a variant.
const rowFormat = "%-3s  %-8s  %7s  %10s  %7s  %8s  %8s  %5s  %8s\n"

// printHeader prints the two lines heading the table of runs.
func printHeader(w io.Writer) {
	fmt.Fprintf(w, rowFormat, "run", "variant", "seconds", "records/s", "startup", "CPU s", "broker", "cores", "peak RSS")
	fmt.Fprintf(w, rowFormat, "", "", "", "", "s", "", "CPU s", "used", "MiB")
}

// printRow prints one run; "-" stands for what is unknown.
func printRow(w io.Writer, r result) {
	brokerCPU, cores := "-", "-"
	if r.brokerCPU >= 0 {
		brokerCPU = fmt.Sprintf("%.2f", r.brokerCPU.Seconds())
		cores = fmt.Sprintf("%.2f", r.coresUsed())
	}
	fmt.Fprintf(w, rowFormat, strconv.Itoa(r.run), r.variant,
		fmt.Sprintf("%.2f", r.Elapsed.Seconds()),
		thousands(r.perSecond()),
		fmt.Sprintf("%.2f", r.Startup.Seconds()),
		fmt.Sprintf("%.2f", r.cpu.Seconds()),
		brokerCPU, cores, rss(r.peakRSS))
}

// printSummary prints, per variant, the median and range of its runs'
// throughput, its median peak RSS and CPU cost per record, then the ratio
// of samsa to the baseline.
func printSummary(w io.Writer, variantNames []string, results []result) {
	byVariant := map[string][]result{}
	for _, r := range results {
		byVariant[r.variant] = append(byVariant[r.variant], r)
	}
	fmt.Fprintf(w, "\nmedian of %d run(s) each (min–max):\n", len(byVariant[variantNames[0]]))
	const summaryFormat = "%-8s  %-33s  %8s  %10s  %10s\n"
	fmt.Fprintf(w, summaryFormat, "variant", "records/s", "peak RSS", "CPU", "broker CPU")
	fmt.Fprintf(w, summaryFormat, "", "", "MiB", "µs/record", "µs/record")
	medians := map[string]float64{}
	for _, v := range variantNames {
		rs := byVariant[v]
		perSec := collect(rs, result.perSecond)
		medians[v] = median(perSec)
		brokerCPU := "-"
		if rs[0].brokerCPU >= 0 {
			brokerCPU = fmt.Sprintf("%.2f", median(collect(rs, func(r result) float64 { return perRecord(r, r.brokerCPU.Seconds()) })))
		}
		fmt.Fprintf(w, summaryFormat, v,
			fmt.Sprintf("%s (%s–%s)", thousands(medians[v]), thousands(slices.Min(perSec)), thousands(slices.Max(perSec))),
			rss(int64(median(collect(rs, func(r result) float64 { return float64(r.peakRSS) })))),
			fmt.Sprintf("%.2f", median(collect(rs, func(r result) float64 { return perRecord(r, r.cpu.Seconds()) }))),
			brokerCPU)
	}

	base, samsa := byVariant["baseline"], byVariant["samsa"]
	if len(base) == 0 || len(samsa) == 0 {
		return
	}
	var perRun []string
	for i := range min(len(base), len(samsa)) {
		perRun = append(perRun, fmt.Sprintf("%.2f", samsa[i].perSecond()/base[i].perSecond()))
	}
	fmt.Fprintf(w, "\nsamsa/baseline: %.2f× (ratio of the medians; run by run: %s)\n",
		medians["samsa"]/medians["baseline"], strings.Join(perRun, ", "))
}

// perRecord returns seconds spread over the run's records, in µs.
func perRecord(r result, seconds float64) float64 { return seconds * 1e6 / float64(r.records) }

// collect returns f of each result.
func collect(rs []result, f func(result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// median returns the median of xs, which must not be empty.
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// mib converts bytes to mebibytes.
func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// rss formats a peak RSS in MiB, or "-" if it is unknown.
func rss(bytes int64) string {
	if bytes <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", mib(bytes))
}

// thousands formats v rounded to an integer, with commas between groups
// of three digits.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
