package coordinator

import (
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's Prometheus series, in a registry of its own
// so several coordinators can live in one process (tests, the demo).
type metrics struct {
	reg       *prometheus.Registry
	begun     prometheus.Counter
	outcomes  *prometheus.CounterVec
	byOutcome [engine.OutcomeRejected + 1]prometheus.Counter
	ignored   prometheus.Counter
	syncs     prometheus.Histogram
	batch     prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.begun = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "commitd_coordinator_begun_total", Help: "Transactions handed to a shard."})
	m.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "commitd_coordinator_transactions_total", Help: "Transactions answered, by outcome."}, []string{"outcome"})
	for o := engine.OutcomeCommitted; o <= engine.OutcomeRejected; o++ {
		m.byOutcome[o] = m.outcomes.WithLabelValues(o.String())
	}
	m.ignored = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "commitd_coordinator_ignored_frames_total", Help: "Well-formed frames that made no sense here (unknown participant, wrong type)."})
	m.syncs = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "commitd_wal_fsync_seconds", Help: "Duration of one log write + fdatasync.",
		Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14)})
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "commitd_wal_batch_records", Help: "Records made durable by one fdatasync.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14)})
	m.reg.MustRegister(m.begun, m.outcomes, m.ignored, m.syncs, m.batch)
	return m
}

func (m *metrics) outcome(o engine.Outcome) {
	if int(o) < len(m.byOutcome) && m.byOutcome[o] != nil {
		m.byOutcome[o].Inc()
	}
}

// observeSync is the log's OnSync hook (called on the log's flusher).
func (m *metrics) observeSync(records, _ int, d time.Duration) {
	m.syncs.Observe(d.Seconds())
	m.batch.Observe(float64(records))
}
