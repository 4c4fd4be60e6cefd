package coordinator

import (
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// deliverRig is a Server with n participants, each a mux.Peer connected
// to a server that counts what it receives.
type deliverRig struct {
	s    *Server
	o    *shardOutput
	got  atomic.Int64 // prepares and decisions received, all participants
	recv []*recorder
}

// recorder counts the prepares and decisions one participant receives
// and, with keep, keeps them in order as "type txn".
type recorder struct {
	got  *atomic.Int64
	keep bool
	mu   sync.Mutex
	seen []string
}

func (r *recorder) HandleFrame(c *mux.Conn, f wire.Frame) error {
	if f.Type != wire.TypePrepare && f.Type != wire.TypeDecision {
		return nil
	}
	if r.keep {
		var txn [16]byte
		copy(txn[:], f.Payload) // both start with the transaction id
		r.mu.Lock()
		r.seen = append(r.seen, f.Type.String()+" "+uuid.UUID(txn).String())
		r.mu.Unlock()
	}
	r.got.Add(1)
	return nil
}

func (r *recorder) frames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func newDeliverRig(t testing.TB, n int, keep bool) *deliverRig {
	rig := &deliverRig{}
	ps := &participantSet{peers: map[string]*peer{}, names: map[string]string{}}
	for i := range n {
		name := string(rune('a'+i)) + "-participant"
		rec := &recorder{got: &rig.got, keep: keep}
		rig.recv = append(rig.recv, rec)
		srv := mux.NewServer(mux.ServerOptions{Conn: mux.Options{Handler: rec, Logger: nodetest.Quiet()}})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		p := &peer{name: name, addr: ln.Addr().String()}
		p.mux = mux.NewPeer(p.addr, mux.PeerOptions{
			Conn:  mux.Options{Logger: nodetest.Quiet()},
			Hello: wire.Hello{Role: wire.RoleCoordinator, Name: []byte(name)},
			Conns: 1,
		})
		t.Cleanup(func() { p.mux.Close() })
		ps.peers[name], ps.names[name] = p, name
	}
	rig.s = &Server{metrics: newMetrics()}
	rig.s.pset.Store(ps)
	rig.o = &shardOutput{s: rig.s}
	nodetest.Eventually(t, "every participant connected", func() bool {
		for _, p := range ps.peers {
			if p.mux.Stats().Connected == 0 {
				return false
			}
		}
		return true
	})
	return rig
}

// ready is a pump round's messages for txns transactions: prepares to
// every participant, then commit decisions to every participant, in
// the order the engine emits them (each transaction's to every
// participant in turn).
func (rig *deliverRig) ready(txns int) *engine.Ready {
	ps := rig.s.set()
	names := make([]string, 0, len(ps.names))
	for i := range len(ps.names) {
		names = append(names, ps.names[string(rune('a'+i))+"-participant"])
	}
	rd := &engine.Ready{}
	for i := range txns {
		for _, name := range names {
			rd.Messages = append(rd.Messages, engine.Message{Type: engine.MsgPrepare, Txn: txnID(i), To: name, Work: []byte("transfer 1 -> 2: 50")})
		}
	}
	for i := range txns {
		for _, name := range names {
			rd.Messages = append(rd.Messages, engine.Message{Type: engine.MsgDecision, Txn: txnID(i), To: name, Decision: protocol.DecisionCommit})
		}
	}
	return rd
}

func txnID(i int) protocol.TxnID {
	var id protocol.TxnID
	id[0], id[1], id[15] = byte(i>>8), byte(i), 7
	return id
}

// BenchmarkDeliverMessages is the pump's delivery of a round's prepares
// and decisions: 16 transactions over 2 participants, 64 frames.
func BenchmarkDeliverMessages(b *testing.B) {
	rig := newDeliverRig(b, 2, false)
	rd := rig.ready(16)
	per := int64(len(rd.Messages))
	b.ReportAllocs()
	var sent int64
	for b.Loop() {
		rig.o.Deliver(rd)
		sent += per
		// Keep the participants' queues under their bound, as a real
		// coordinator's in-flight limit does.
		for sent-rig.got.Load() > 20000 {
			time.Sleep(20 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*per), "ns/frame")
}

// Deliver sends each participant exactly the prepares and decisions a
// Ready has for it, in the Ready's order, over rounds that name different
// participants — the property any batching of a round's frames per
// participant must keep (docs/benchmarks.md: such a batching was tried).
func TestDeliverKeepsEachParticipantsOrder(t *testing.T) {
	const n = 18
	rig := newDeliverRig(t, n, true)
	rounds := []*engine.Ready{rig.ready(5), rig.ready(1), rig.ready(3)}
	rounds[1].Messages = rounds[1].Messages[:3] // prepares to the first 3 only
	want := make([][]string, n)
	total := 0
	for _, rd := range rounds {
		for _, m := range rd.Messages {
			i := int(m.To[0] - 'a')
			typ := wire.TypePrepare
			if m.Type == engine.MsgDecision {
				typ = wire.TypeDecision
			}
			want[i] = append(want[i], typ.String()+" "+uuid.UUID(m.Txn).String())
			total++
		}
		rig.o.Deliver(rd)
	}
	nodetest.Eventually(t, "every frame received", func() bool { return rig.got.Load() >= int64(total) })
	if got := rig.got.Load(); got != int64(total) {
		t.Fatalf("%d frames received, want %d", got, total)
	}
	for i, rec := range rig.recv {
		if got := rec.frames(); !slices.Equal(got, want[i]) {
			t.Errorf("participant %d received\n%v\nwant\n%v", i, got, want[i])
		}
	}
}

// Delivering a round's messages does not allocate once the batch's
// slices and the connections' queues have grown.
func TestDeliverMessagesDoNotAllocate(t *testing.T) {
	rig := newDeliverRig(t, 3, false)
	rd := rig.ready(16)
	for range 100 {
		rig.o.Deliver(rd)
	}
	calls := 100
	// A little slack: a writer may fall behind and its queue grow once.
	if n := testing.AllocsPerRun(200, func() { calls++; rig.o.Deliver(rd) }); n > 0.1 {
		t.Fatalf("%.2f allocations per Ready of %d messages", n, len(rd.Messages))
	}
	sent := int64(calls * len(rd.Messages))
	nodetest.Eventually(t, "every frame received", func() bool { return rig.got.Load() == sent })
}
