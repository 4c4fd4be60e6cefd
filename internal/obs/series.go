package obs

import (
	"sync"
	"time"

	"github.com/commitd/commitd/net/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// WAL records a write-ahead log's batches: how long each write + fdatasync
// took and how many records it made durable. Its OnSync is the log's
// wal.Options.OnSync hook.
type WAL struct {
	syncs, batch prometheus.Histogram
}

// NewWAL registers the series for the log called name ("wal", "ledger").
func NewWAL(reg prometheus.Registerer, name string) *WAL {
	w := &WAL{
		syncs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "commitd_wal_fsync_seconds", Help: "Duration of one log write + fdatasync.",
			ConstLabels: prometheus.Labels{"log": name},
			Buckets:     prometheus.ExponentialBuckets(25e-6, 2, 14)}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "commitd_wal_batch_records", Help: "Records made durable by one fdatasync.",
			ConstLabels: prometheus.Labels{"log": name},
			Buckets:     prometheus.ExponentialBuckets(1, 2, 14)}),
	}
	reg.MustRegister(w.syncs, w.batch)
	return w
}

// OnSync observes one batch (called on the log's flusher goroutine).
func (w *WAL) OnSync(records, _ int, d time.Duration) {
	w.syncs.Observe(d.Seconds())
	w.batch.Observe(float64(records))
}

// Writes exposes the write counters of a server's connections — write
// calls, frames and bytes written — so frames per write (coalescing) can be
// read off /metrics. Connections come and go: a closed one's counts are
// kept in the total.
type Writes struct {
	mu     sync.Mutex
	closed mux.Stats
	live   func() mux.Stats
}

// NewWrites registers the counters; live sums the open connections' stats.
func NewWrites(reg prometheus.Registerer, live func() mux.Stats) *Writes {
	w := &Writes{live: live}
	counter := func(name, help string, pick func(mux.Stats) uint64) prometheus.CounterFunc {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			return float64(pick(w.total()))
		})
	}
	reg.MustRegister(
		counter("commitd_conn_writes_total", "Write calls on connections.", func(s mux.Stats) uint64 { return s.Writes }),
		counter("commitd_conn_frames_written_total", "Frames written on connections.", func(s mux.Stats) uint64 { return s.FramesSent }),
		counter("commitd_conn_bytes_written_total", "Bytes written on connections.", func(s mux.Stats) uint64 { return s.BytesSent }),
	)
	return w
}

// Closed adds a closed connection's final counts.
func (w *Writes) Closed(st mux.Stats) {
	w.mu.Lock()
	w.closed.Add(st)
	w.mu.Unlock()
}

func (w *Writes) total() mux.Stats {
	live := w.live()
	w.mu.Lock()
	defer w.mu.Unlock()
	live.Add(w.closed)
	return live
}
