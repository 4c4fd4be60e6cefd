package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

// memCluster is a coordinator and bank participants in this process, each
// on its own crashable in-memory file system (the data directories exist
// on disk only for their locks), so a test can fail a node's disk, crash
// it to what it had synced and start it again.
type memCluster struct {
	t        *testing.T
	dir      string
	accounts int
	balance  int64
	names    []string
	addrs    []string // participants'
	coordAdr string

	// Written by the test goroutine only (between loads).
	coordFS *waltest.MemFS
	partFS  []*waltest.MemFS
	coord   *coordinator.Server
	parts   []*participant.Server
	banks   []*bank.Bank
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newMemCluster(t *testing.T, participants, accounts int) *memCluster {
	m := &memCluster{t: t, dir: t.TempDir(), accounts: accounts, balance: 1000, coordFS: waltest.NewMemFS()}
	m.coordAdr = mustFreeAddr(t)
	for i := range participants {
		m.names = append(m.names, fmt.Sprintf("p%d", i+1))
		m.addrs = append(m.addrs, mustFreeAddr(t))
		m.partFS = append(m.partFS, waltest.NewMemFS())
		m.parts = append(m.parts, nil)
		m.banks = append(m.banks, nil)
	}
	for i := range m.names {
		m.startParticipant(i)
	}
	m.startCoordinator()
	t.Cleanup(m.close)
	m.waitConnected()
	return m
}

func mustFreeAddr(t *testing.T) string {
	a, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (m *memCluster) startParticipant(i int) {
	m.banks[i] = bank.New(m.accounts, m.balance)
	p, err := participant.Start(participant.Config{
		Name: m.names[i], Listen: m.addrs[i], DataDir: filepath.Join(m.dir, m.names[i]),
		Coordinator: m.coordAdr, Resource: m.banks[i], FS: m.partFS[i],
		InquireAfter: 200 * time.Millisecond, InquireMax: time.Second,
		SegmentBytes: 1 << 20, Logger: quiet(),
	})
	if err != nil {
		m.t.Fatalf("starting %s: %v", m.names[i], err)
	}
	m.parts[i] = p
}

func (m *memCluster) startCoordinator() {
	peers := map[string]string{}
	for i, n := range m.names {
		peers[n] = m.addrs[i]
	}
	c, err := coordinator.Start(coordinator.Config{
		Listen: m.coordAdr, DataDir: filepath.Join(m.dir, "coordinator"), Participants: peers,
		FS: m.coordFS, PrepareTimeout: 500 * time.Millisecond, RedeliverMin: 50 * time.Millisecond,
		RedeliverMax: time.Second, SegmentBytes: 1 << 20, Logger: quiet(),
	})
	if err != nil {
		m.t.Fatalf("starting the coordinator: %v", err)
	}
	m.coord = c
}

func (m *memCluster) waitConnected() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.coord.WaitConnected(ctx); err != nil {
		m.t.Fatal(err)
	}
	for _, p := range m.parts {
		if err := p.WaitConnected(ctx); err != nil {
			m.t.Fatal(err)
		}
	}
}

func (m *memCluster) close() {
	if m.coord != nil {
		m.coord.Close()
	}
	for _, p := range m.parts {
		if p != nil {
			p.Close()
		}
	}
}

// quiet waits until nothing is in flight or in doubt anywhere.
func (m *memCluster) waitQuiet(bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		st := m.coord.Status()
		busy := st.InDoubt + st.InFlight
		for _, p := range m.parts {
			busy += p.AccountsSummary().Prepared
		}
		if busy == 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// history stops every server and gathers what the checker needs: ledgers,
// totals, and, with the servers stopped, every balance.
func (m *memCluster) history(acks []Ack, probesRun, probesCommitted int) *History {
	h := &History{
		Acks: acks, EveryBranchWrites: true,
		StartTotal: int64(len(m.names)) * int64(m.accounts) * m.balance,
		Ledgers:    map[string]map[uuid.UUID]State{}, Totals: map[string]int64{},
		MinBalance: map[string]int64{}, Prepared: map[string]int{},
		ProbesRun: probesRun, ProbesCommitted: probesCommitted,
	}
	st := m.coord.Status()
	h.CoordinatorInDoubt, h.CoordinatorInFlight = st.InDoubt, st.InFlight
	for i, p := range m.parts {
		l := map[uuid.UUID]State{}
		for _, o := range p.Outcomes() {
			s, err := ParseState(o.Outcome)
			if err != nil {
				m.t.Fatal(err)
			}
			l[o.Txn] = s
		}
		h.Ledgers[m.names[i]] = l
		a := p.AccountsSummary()
		h.Totals[m.names[i]], h.Prepared[m.names[i]] = a.Total, a.Prepared
	}
	m.close()
	for i, b := range m.banks {
		low := b.Balance(0)
		for a := range b.Accounts() {
			low = min(low, b.Balance(uint32(a)))
		}
		h.MinBalance[m.names[i]] = low
	}
	return h
}

// load runs transfers between the participants from callers goroutines
// until stop is closed, recording every answer.
type load struct {
	mu        sync.Mutex
	acks      []Ack
	committed atomic.Int64
	wg        sync.WaitGroup
	stop      chan struct{}
}

var toldOf = map[client.Outcome]Told{client.Committed: ToldCommitted, client.Aborted: ToldAborted,
	client.Unknown: ToldUnknown, client.Rejected: ToldRejected}

func startLoad(t *testing.T, addr string, names []string, accounts, callers int, seed uint64) *load {
	cl, err := client.Dial(addr, client.Options{Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	l := &load{stop: make(chan struct{})}
	for w := range callers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				i := rng.IntN(len(names))
				j := (i + 1 + rng.IntN(len(names)-1)) % len(names)
				amt := 1 + rng.Int64N(10)
				br := []client.Branch{
					{Participant: names[i], Work: bank.AppendWork(nil, uint32(rng.IntN(accounts)), -amt)},
					{Participant: names[j], Work: bank.AppendWork(nil, uint32(rng.IntN(accounts)), amt)},
				}
				id := uuid.Must(uuid.NewV7())
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := cl.Run(ctx, id, br)
				cancel()
				l.mu.Lock()
				l.acks = append(l.acks, Ack{Txn: id, Told: toldOf[res.Outcome], Participants: names[i] + "," + names[j]})
				l.mu.Unlock()
				if res.Outcome == client.Committed {
					l.committed.Add(1)
				}
				if err != nil {
					time.Sleep(5 * time.Millisecond) // not connected: do not spin
				}
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		<-l.stop
		cl.Close()
	}()
	return l
}

// end stops the load and returns every answer.
func (l *load) end() []Ack {
	close(l.stop)
	l.wg.Wait()
	return l.acks
}

// probeCommits runs n fresh transfers of 1 and returns how many committed.
func probeCommits(t *testing.T, addr string, names []string, accounts, n int) int {
	cl, err := client.Dial(addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ok := 0
	for i := range n {
		a := uint32(i % accounts)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
			{Participant: names[0], Work: bank.AppendWork(nil, a, -1)},
			{Participant: names[1], Work: bank.AppendWork(nil, a, 1)},
		})
		cancel()
		if err == nil && res.Outcome == client.Committed {
			ok++
		} else {
			t.Logf("probe: %v %v", res, err)
		}
	}
	return ok
}

// checkHistory runs the checker and fails the test on any violation.
func checkHistory(t *testing.T, h *History) Result {
	t.Helper()
	r, err := Check(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range r.Violations {
		t.Errorf("violation: %v", v)
	}
	return r
}

// listenable reports whether addr can be listened on (nobody holds it).
func listenable(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
