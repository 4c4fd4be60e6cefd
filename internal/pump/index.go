package pump

import (
	"sync"
	"sync/atomic"

	"github.com/commitd/commitd/wal"
)

// indexMap remembers, for one engine machine, which log position each of
// its records landed at, so that the machine's record indexes ("durable up
// to index i", "nothing below index w is needed") can be translated to log
// LSNs and back. Entries are appended in index order and trimmed from the
// front, so it is a ring that stops allocating once warm.
//
// Owned by the machine's pump goroutine.
type indexMap struct {
	entries []indexLSN // ring buffer
	head    int        // position of the oldest entry
	n       int        // live entries
	durable int        // entries (from head) already reported durable
}

type indexLSN struct {
	index uint64
	lsn   wal.LSN
}

func (m *indexMap) push(index uint64, lsn wal.LSN) {
	if m.n == len(m.entries) {
		grown := make([]indexLSN, max(64, 2*len(m.entries)))
		for i := 0; i < m.n; i++ {
			grown[i] = m.entries[(m.head+i)%len(m.entries)]
		}
		m.entries, m.head = grown, 0
	}
	m.entries[(m.head+m.n)%len(m.entries)] = indexLSN{index, lsn}
	m.n++
}

func (m *indexMap) at(i int) indexLSN { return m.entries[(m.head+i)%len(m.entries)] }

// markDurable advances over every entry whose LSN is ≤ lsn and returns the
// highest index now durable (0 if none advanced).
func (m *indexMap) markDurable(lsn wal.LSN) (index uint64, advanced bool) {
	for m.durable < m.n {
		e := m.at(m.durable)
		if e.lsn > lsn {
			break
		}
		index, advanced = e.index, true
		m.durable++
	}
	return index, advanced
}

// trim drops every entry whose index is below lowWater and returns the LSN
// of the oldest record still needed, or 0 with ok=false if none is.
// Entries not yet durable are never dropped.
func (m *indexMap) trim(lowWater uint64) (needed wal.LSN, ok bool) {
	for m.n > 0 && m.durable > 0 && m.at(0).index < lowWater {
		m.head = (m.head + 1) % len(m.entries)
		m.n--
		m.durable--
	}
	if m.n == 0 {
		return 0, false
	}
	return m.at(0).lsn, true
}

// durableSignal carries "the log is durable up to LSN x" from the log's
// flusher goroutine to a pump goroutine without blocking the flusher and
// without allocating: the flusher stores the highest durable LSN, or the
// poison error, and pokes a one-slot channel. Progress and failure are
// kept apart: lsn only ever holds an LSN the log said was durable, so a
// failure that arrives between the pump's two reads (error, then lsn)
// cannot make it report a record whose write or fsync failed.
type durableSignal struct {
	lsn    atomic.Uint64 // highest LSN reported durable; never a failed one
	errMu  sync.Mutex
	err    error
	wakeup chan struct{} // capacity 1, shared with the pump's other inputs
}

// LogDurable implements wal.Waiter.
func (s *durableSignal) LogDurable(lsn wal.LSN) {
	for {
		cur := s.lsn.Load()
		if uint64(lsn) <= cur || s.lsn.CompareAndSwap(cur, uint64(lsn)) {
			break
		}
	}
	s.poke()
}

// LogFailed implements wal.Waiter. It records the failure and leaves the
// durable LSN where it was: the failed record is not durable.
func (s *durableSignal) LogFailed(_ wal.LSN, err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
	s.poke()
}

func (s *durableSignal) poke() {
	select {
	case s.wakeup <- struct{}{}:
	default:
	}
}

func (s *durableSignal) failure() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}
