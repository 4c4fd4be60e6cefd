package wal_test

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// crashSeeds is how many seeded crash runs TestCrash makes; set
// COMMITD_WAL_CRASH_SEEDS for a longer soak.
func crashSeeds(t *testing.T) int {
	if s := os.Getenv("COMMITD_WAL_CRASH_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("COMMITD_WAL_CRASH_SEEDS: %v", err)
		}
		return n
	}
	if testing.Short() {
		return 50
	}
	return 300
}

// Records in the crash test carry an id (life<<48 | writer<<32 | i) and are
// record(id, crashExtra): self-describing, so a survivor can be checked
// without knowing whether its append was ever reported.
const crashExtra = 150

func crashID(life, writer, i int) uint64 { return uint64(life)<<48 | uint64(writer)<<32 | uint64(i) }

// TestCrash appends from many goroutines (AppendSync and Notify), rolls
// over and retires segments, crashes the file system at a random moment —
// keeping only synced data plus a torn part of unsynced writes — reopens,
// and checks: every record reported durable is there, at its LSN, byte for
// byte; the log is a gap-free run of records that were really appended, each
// once, in each writer's order; and records still needed were not retired.
// Each seed runs several lives (crash, recover, continue) on one disk.
// COMMITD_WAL_CRASH_SEED=s runs only seed s (goroutine timing still varies
// between runs; the seed fixes sizes, counts, crash points and tearing).
func TestCrash(t *testing.T) {
	seeds := []uint64{}
	if s := os.Getenv("COMMITD_WAL_CRASH_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("COMMITD_WAL_CRASH_SEED: %v", err)
		}
		seeds = append(seeds, seed)
	} else {
		for seed := range uint64(crashSeeds(t)) {
			seeds = append(seeds, seed)
		}
	}
	for _, seed := range seeds {
		crashRun(t, seed)
		if t.Failed() {
			t.Fatalf("seed %d failed; rerun with COMMITD_WAL_CRASH_SEED=%d", seed, seed)
		}
	}
}

// crashModel is what the test knows across lives.
type crashModel struct {
	// durable maps each LSN reported durable (or recovered, hence synced by
	// Open) to the id it must hold.
	durable map[wal.LSN]uint64
	// retired: records below it may be gone.
	retired wal.LSN
	// maxDurable is the highest LSN ever reported durable: LSNs never go
	// back below it, even when everything was retired.
	maxDurable wal.LSN
}

func crashRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0xc0ffee))
	opts := wal.Options{
		SegmentBytes:    int64(256 + 256*rng.IntN(8)),
		SegmentsAhead:   1 + rng.IntN(2),
		NoGroupCommit:   rng.IntN(6) == 0,
		MaxPendingBytes: 512 + rng.IntN(4096),
	}
	fs := waltest.NewMemFS()
	m := &crashModel{durable: map[wal.LSN]uint64{}}
	lives := 2 + rng.IntN(3)
	for life := range lives {
		opts.FS = fs
		l, err := wal.Open(testDir, opts)
		if err != nil {
			t.Errorf("seed %d life %d: Open: %v", seed, life, err)
			return
		}
		if os.Getenv("CRASH_DEBUG") != "" {
			st, rec := l.Stats(), l.Recovery()
			t.Logf("seed %d life %d: segs %d first %d last %d durable-known %d retired %d torn %v (%s) pool/ready %d", seed, life, st.Segments, st.FirstLSN, st.LastLSN, len(m.durable), m.retired, rec.Torn, rec.TailReason, st.ReadySegments)
		}
		if !checkRecovered(t, seed, life, l, m) {
			_ = l.Close()
			return
		}
		if life == lives-1 {
			if err := l.Close(); err != nil {
				t.Errorf("seed %d: final Close: %v", seed, err)
			}
			return
		}
		fs = crashLife(t, rng, fs, l, life, m)
	}
}

// checkRecovered replays the whole log after Open and checks it against the
// model, then adds every recovered record to the model's durable set: Open
// synced them, so they must survive every later crash.
func checkRecovered(t *testing.T, seed uint64, life int, l *wal.Log, m *crashModel) bool {
	st := l.Stats()
	if st.LastLSN < m.maxDurable {
		t.Errorf("seed %d life %d: log ends at LSN %d, but LSN %d was durable: LSNs went back", seed, life, st.LastLSN, m.maxDurable)
		return false
	}
	if st.LastLSN == 0 {
		if len(m.durable) > 0 {
			t.Errorf("seed %d life %d: log empty, %d durable records lost", seed, life, len(m.durable))
			return false
		}
		return true
	}
	from := st.FirstLSN
	if from > max(m.retired, 1) {
		t.Errorf("seed %d life %d: log starts at %d, but records from %d on were still needed", seed, life, from, m.retired)
		return false
	}
	seenID := map[uint64]bool{}
	lastI := map[uint64]int{} // (life, writer) -> last i seen
	next := from
	err := l.Replay(from, func(lsn wal.LSN, data []byte) error {
		if lsn != next {
			t.Errorf("seed %d life %d: replay gave LSN %d, want %d", seed, life, lsn, next)
		}
		next = lsn + 1
		id, ok := checkRecord(data, crashExtra)
		if !ok {
			t.Errorf("seed %d life %d: LSN %d holds bytes never appended: %x", seed, life, lsn, data)
			return nil
		}
		if seenID[id] {
			t.Errorf("seed %d life %d: record %x appears twice", seed, life, id)
		}
		seenID[id] = true
		if want, ok := m.durable[lsn]; ok && want != id {
			t.Errorf("seed %d life %d: durable LSN %d holds record %x, want %x", seed, life, lsn, id, want)
		}
		w, i := id>>32, int(uint32(id))
		if prev, ok := lastI[w]; ok && i <= prev {
			t.Errorf("seed %d life %d: writer %x's record %d after its record %d", seed, life, w, i, prev)
		}
		lastI[w] = i
		m.durable[lsn] = id
		m.maxDurable = max(m.maxDurable, lsn)
		return nil
	})
	if err != nil {
		t.Errorf("seed %d life %d: Replay: %v", seed, life, err)
		return false
	}
	if next-1 != st.LastLSN {
		t.Errorf("seed %d life %d: replay ended at %d, LastLSN %d", seed, life, next-1, st.LastLSN)
	}
	for lsn := range m.durable {
		if lsn >= from && lsn > st.LastLSN {
			t.Errorf("seed %d life %d: durable LSN %d lost (log ends at %d)", seed, life, lsn, st.LastLSN)
			return false
		}
		if lsn < from {
			if lsn >= m.retired {
				t.Errorf("seed %d life %d: durable LSN %d lost (log starts at %d, retired below %d)", seed, life, lsn, from, m.retired)
				return false
			}
			delete(m.durable, lsn)
		}
	}
	return !t.Failed()
}

// ackWaiter records a Notify acknowledgement into the shared ack list.
type ackWaiter struct {
	a  *acks
	id uint64
}

func (w ackWaiter) LogDurable(lsn wal.LSN) { w.a.add(lsn, w.id) }

func (w ackWaiter) LogFailed(wal.LSN, error) {}

// acks collects durability reports until the crash.
type acks struct {
	mu      sync.Mutex
	crashed bool
	ids     map[wal.LSN]uint64
	count   int
	trigger int
	fire    chan struct{}
}

func (a *acks) add(lsn wal.LSN, id uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.crashed {
		return
	}
	a.ids[lsn] = id
	a.count++
	if a.count == a.trigger {
		close(a.fire)
	}
}

// crashLife runs appenders and a retirer on l, crashes fs at a random
// moment — after a random number of durability reports, or exactly at a
// random file system operation (between a rename and its directory fsync,
// a write and its fsync, ...) — and returns the surviving file system.
func crashLife(t *testing.T, rng *rand.Rand, fs *waltest.MemFS, l *wal.Log, life int, m *crashModel) *waltest.MemFS {
	writers := 1 + rng.IntN(8)
	each := rng.IntN(60)
	a := &acks{
		ids:     map[wal.LSN]uint64{},
		trigger: rng.IntN(writers*each + 1),
		fire:    make(chan struct{}),
	}
	if a.trigger == 0 {
		close(a.fire)
	}
	crashRng := rand.New(rand.NewPCG(rng.Uint64(), 1))
	var image *waltest.MemFS
	var crashOnce sync.Once
	crashed := make(chan struct{})
	crash := func() {
		crashOnce.Do(func() {
			a.mu.Lock()
			image = fs.Crash(crashRng)
			a.crashed = true
			for lsn, id := range a.ids {
				m.durable[lsn] = id
				m.maxDurable = max(m.maxDurable, lsn)
			}
			a.mu.Unlock()
			close(crashed)
		})
	}
	if rng.IntN(2) == 0 {
		var ops atomic.Int64
		atOp := int64(rng.IntN(20 + 4*writers*each))
		fs.Inject(func(waltest.Op) error {
			if ops.Add(1) == atOp {
				crash()
			}
			return nil
		})
	}

	var wg sync.WaitGroup
	for w := range writers {
		notify := w%2 == 1
		wg.Go(func() {
			for i := range each {
				id := crashID(life, w+1, i) // writer 0 would make id 0 ambiguous
				data := record(id, crashExtra)
				if notify {
					if _, err := l.AppendNotify(data, ackWaiter{a, id}); err != nil {
						return
					}
					continue
				}
				lsn, err := l.AppendSync(data)
				if err != nil {
					return
				}
				a.add(lsn, id)
			}
		})
	}
	retireStop := make(chan struct{})
	var retirer sync.WaitGroup
	var retiredBelow wal.LSN
	if rng.IntN(2) == 0 {
		keep := wal.LSN(rng.IntN(40))
		all := rng.IntN(3) == 0 // the owner needs nothing: retire past the last append
		retirer.Go(func() {
			for {
				select {
				case <-retireStop:
					return
				default:
				}
				d := l.DurableLSN()
				if d <= keep && !all {
					runtime.Gosched()
					continue
				}
				lowest := d - keep
				if all {
					lowest = l.LastLSN() + 1
				}
				retiredBelow = max(retiredBelow, lowest) // before the call: it may take effect
				if l.Retire(lowest) != nil {
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-a.fire:
	case <-done:
	case <-crashed:
	}
	crash()
	close(retireStop)
	retirer.Wait()
	m.retired = max(m.retired, retiredBelow)
	_ = l.Close() // fails: the old file system is frozen
	<-done
	return image
}

// TestCrashRecordIDs checks the test's own encoding.
func TestCrashRecordIDs(t *testing.T) {
	id := crashID(3, 5, 7)
	b := record(id, crashExtra)
	if got, ok := checkRecord(b, crashExtra); !ok || got != id {
		t.Fatal("record does not check")
	}
	b[len(b)-1] ^= 1
	if _, ok := checkRecord(b, crashExtra); ok && len(b) > 8 {
		t.Fatal("damaged record checks")
	}
	if binary.LittleEndian.Uint64(b) != id {
		t.Fatal("id not first")
	}
}
