package runner

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are a runner's Prometheus metrics, in a registry of its own so
// that several runners in one process do not collide.
type metrics struct {
	reg           *prometheus.Registry
	recordsIn     *prometheus.CounterVec
	recordsOut    *prometheus.CounterVec
	commits       prometheus.Counter
	aborts        prometheus.Counter
	commitSeconds prometheus.Histogram
	restored      *prometheus.CounterVec
	restoreLeft   *prometheus.GaugeVec

	processSeconds prometheus.Histogram
	// view is what the HTTP endpoint serves besides the metrics, and the
	// lag and store-size gauges; see observe.go.
	view *observer
}

func newMetrics(job string) *metrics {
	labels := prometheus.Labels{"job": job}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		recordsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samsa_records_in_total", Help: "Input records processed, by topic and task.", ConstLabels: labels,
		}, []string{"topic", "task"}),
		recordsOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samsa_records_out_total", Help: "Records written, by topic (outputs, repartition and changelog topics) and task.", ConstLabels: labels,
		}, []string{"topic", "task"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "samsa_commits_total", Help: "Commits of input offsets.", ConstLabels: labels,
		}),
		aborts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "samsa_transaction_aborts_total", Help: "Transactions aborted under exactly-once (rebalances, fencing, failed writes).", ConstLabels: labels,
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "samsa_commit_seconds", Help: "Time to flush outputs and commit offsets.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		restored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samsa_restore_records_total", Help: "Changelog records restored into stores, by store and task.", ConstLabels: labels,
		}, []string{"store", "task"}),
		restoreLeft: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "samsa_restore_remaining_records", Help: "Changelog records left to restore, by store and task.", ConstLabels: labels,
		}, []string{"store", "task"}),
		processSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "samsa_process_seconds", ConstLabels: labels,
			Help:    "Time a task takes to process one polled batch of its records (up to 10,000).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
	}
	m.reg.MustRegister(m.recordsIn, m.recordsOut, m.commits, m.aborts, m.commitSeconds, m.restored, m.restoreLeft,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.processSeconds)
	m.view = newObserver(job, m.reg)
	return m
}

// httpListenAddr is where the HTTP endpoint listens for Config.HTTPAddr
// addr: an address without a host (":9100") is on loopback, so that only
// an explicit host (0.0.0.0:9100, a public address) opens the endpoint to
// other machines.
func httpListenAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr // net.Listen reports a malformed one
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// serveHTTP serves the instance's HTTP endpoint on Config.HTTPAddr until
// ctx ends: /metrics and the endpoints of routes (see http.go). It returns
// once the listener is open, so a bad address is reported at start.
func (r *Runner) serveHTTP(ctx context.Context) (string, error) {
	ln, err := net.Listen("tcp", httpListenAddr(r.cfg.HTTPAddr))
	if err != nil {
		return "", fmt.Errorf("runner: flag --http-addr %s: %w", r.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{}))
	r.routes(ctx, mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	go func() { _ = srv.Serve(ln) }() // ends with ErrServerClosed at shutdown
	return ln.Addr().String(), nil
}
