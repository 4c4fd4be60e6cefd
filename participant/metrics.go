package participant

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/obs"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the participant's Prometheus series (in the server's own
// registry, served on --http).
type metrics struct {
	writes  *obs.Writes
	prepare prometheus.Histogram
	starts  [prepareSlots]prepareStart
}

// prepareSlots is how many prepares in flight have their arrival time
// kept; a slot reused before its vote leaves that one unmeasured.
const prepareSlots = 4096

// prepareStart is a slot of the arrival-time table: written by the
// connection's reader, read by the pump goroutine, lock-free. The id tag
// guards against reading another transaction's time; a rare torn read
// only skews the metric.
type prepareStart struct {
	tag atomic.Uint64
	at  atomic.Int64
}

func slotOf(txn protocol.TxnID) (int, uint64) {
	tag := binary.LittleEndian.Uint64(txn[8:16]) // a v7 id's random half
	return int(tag % prepareSlots), tag
}

func newMetrics(s *Server, door *frontDoor) *metrics {
	m := &metrics{}
	reg := s.reg
	m.prepare = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "commitd_participant_prepare_seconds",
		Help:    "From a prepare's arrival to the vote leaving (a YES waits for its prepared record to be durable).",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)})
	stat := func(pick func(engine.ParticipantStats) float64) func() float64 {
		return func() float64 { return pick(s.Stats()) }
	}
	reg.MustRegister(m.prepare,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "commitd_participant_in_doubt",
			Help: "Transactions prepared (voted yes) and not yet decided here."},
			stat(func(x engine.ParticipantStats) float64 { return float64(x.Prepared) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "commitd_participant_oldest_prepared_seconds",
			Help: "How long ago the oldest transaction prepared here and undecided arrived (0: none). Alert when it passes what the coordinator takes to decide and deliver (docs/operations.md)."},
			func() float64 { return s.oldestPrepared().Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "commitd_participant_committed_total",
			Help: "Commits applied."}, stat(func(x engine.ParticipantStats) float64 { return float64(x.Committed) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "commitd_participant_aborted_total",
			Help: "Aborts applied to prepared transactions."}, stat(func(x engine.ParticipantStats) float64 { return float64(x.Aborted) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "commitd_participant_voted_no_total",
			Help: "Prepares answered no."}, stat(func(x engine.ParticipantStats) float64 { return float64(x.VotedNo) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "commitd_participant_inquiries_total",
			Help: "Inquiries sent to the coordinator about in-doubt transactions."}, stat(func(x engine.ParticipantStats) float64 { return float64(x.Inquiries) })),
	)
	if s.forward != nil {
		reg.MustRegister(s.forward.Collectors()...)
	}
	m.writes = obs.NewWrites(reg, func() mux.Stats {
		var st mux.Stats
		door.conns.Range(func(k, _ any) bool {
			st.Add(k.(*mux.Conn).Stats())
			return true
		})
		if s.coord != nil {
			st.Add(s.coord.ConnStats())
		}
		for _, p := range s.replicas {
			st.Add(p.ConnStats())
		}
		return st
	})
	return m
}

// prepareArrived notes when a prepare came in (the connection's reader).
func (m *metrics) prepareArrived(txn protocol.TxnID) {
	i, tag := slotOf(txn)
	m.starts[i].at.Store(time.Now().UnixNano())
	m.starts[i].tag.Store(tag)
}

// voteSent observes the prepare latency of txn (the pump goroutine).
// *nowNs is when the votes of the Ready being delivered leave, in Unix
// nanoseconds: 0 until the first vote measured reads the clock, which the
// others then share. They go out in the same flush, so one reading is as
// true for each, and a clock reading per vote cost about 1 % of a bank
// participant's CPU at 1,000 callers (docs/benchmarks.md).
func (m *metrics) voteSent(txn protocol.TxnID, nowNs *int64) {
	i, tag := slotOf(txn)
	if m.starts[i].tag.Load() != tag {
		return
	}
	t0 := m.starts[i].at.Swap(0)
	if t0 != 0 {
		if *nowNs == 0 {
			*nowNs = time.Now().UnixNano()
		}
		m.prepare.Observe(time.Duration(*nowNs - t0).Seconds())
	}
}
