package coordinator

import (
	"time"

	"github.com/commitd/commitd/internal/obs"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's Prometheus series, in a registry of its own
// so several coordinators can live in one process (tests, the demo).
type metrics struct {
	reg       *prometheus.Registry
	begun     prometheus.Counter
	outcomes  *prometheus.CounterVec
	byOutcome [protocol.OutcomeRejected + 1]prometheus.Counter
	latencies [protocol.OutcomeRejected + 1]prometheus.Observer
	ignored   prometheus.Counter
	notSent   prometheus.Counter
	retried   prometheus.Counter
	wal       *obs.WAL
	writes    *obs.Writes
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.begun = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "commitd_coordinator_begun_total", Help: "Transactions handed to a shard."})
	m.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "commitd_coordinator_transactions_total", Help: "Transactions answered, by outcome."}, []string{"outcome"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "commitd_coordinator_transaction_seconds",
		Help:    "From a Begin's arrival to its answer (prepare, decision forced, reply), by outcome.",
		Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16)}, []string{"outcome"})
	for o := protocol.OutcomeCommitted; o <= protocol.OutcomeRejected; o++ {
		m.byOutcome[o] = m.outcomes.WithLabelValues(o.String())
		m.latencies[o] = latency.WithLabelValues(o.String())
	}
	m.ignored = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "commitd_coordinator_ignored_frames_total", Help: "Well-formed frames the front door had no use for (refused ones close their connection instead)."})
	m.notSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "commitd_coordinator_prepares_not_sent_total", Help: "Prepares dropped for want of a connection to their participant (the transaction was aborted at once)."})
	m.retried = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "commitd_coordinator_operator_redeliveries_total", Help: "Commit decisions sent again because an operator asked (commitd admin retry)."})
	m.reg.MustRegister(m.begun, m.outcomes, latency, m.ignored, m.notSent, m.retried)
	m.wal = obs.NewWAL(m.reg, "wal")
	return m
}

// gauges registers the series read from the running server at scrape time.
func (m *metrics) gauges(s *Server, door *frontDoor) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "commitd_coordinator_in_flight", Help: "Transactions begun and not yet answered."},
			func() float64 { return float64(s.Status().InFlight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "commitd_coordinator_in_doubt", Help: "Commits decided and not yet acknowledged by every participant."},
			func() float64 { return float64(s.Status().InDoubt) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "commitd_coordinator_oldest_in_doubt_seconds",
			Help: "How long ago the oldest commit not yet acknowledged by every participant became durable (0: none). Alert when it passes a few redelivery periods: a participant is down or cut off (docs/operations.md)."},
			func() float64 { return s.oldestInDoubt().Seconds() }),
	)
	m.writes = obs.NewWrites(m.reg, door.writeStats)
	if r := s.rep; r != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "commitd_coordinator_raft_leader",
				Help: "Replicated coordinator: 1 while this replica leads its group, else 0. Replicas that answer and all say 0 mean a group without a leader, which begins no transaction."},
				func() float64 {
					if st := r.status.Load(); st.leader != 0 && st.leader == r.id {
						return 1
					}
					return 0
				}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "commitd_coordinator_raft_term",
				Help: "Replicated coordinator: the raft term this replica is in; each election raises it, so a term that keeps rising means leaders that do not last."},
				func() float64 { return float64(r.status.Load().term) }),
		)
	}
}

func (m *metrics) outcome(o protocol.Outcome) {
	if int(o) < len(m.byOutcome) && m.byOutcome[o] != nil {
		m.byOutcome[o].Inc()
	}
}

func (m *metrics) latency(o protocol.Outcome, d time.Duration) {
	if int(o) < len(m.latencies) && m.latencies[o] != nil {
		m.latencies[o].Observe(d.Seconds())
	}
}

func (m *metrics) prepareNotSent() { m.notSent.Inc() }

func (m *metrics) redeliveredByOperator(n int) { m.retried.Add(float64(n)) }

func (m *metrics) closedConn(st mux.Stats) {
	if m.writes != nil {
		m.writes.Closed(st)
	}
}

// observeSync is the log's OnSync hook (called on the log's flusher).
func (m *metrics) observeSync(records, bytes int, d time.Duration) {
	m.wal.OnSync(records, bytes, d)
}
