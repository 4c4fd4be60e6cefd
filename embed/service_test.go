package embed_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/embed"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/google/uuid"
)

// memService is an embed.Service kept in memory: what a Go program whose
// store keeps prepared work itself looks like to the participant.
type memService struct {
	mu                          sync.Mutex
	prepared, committed, aborts map[embed.TxnID]bool
	refuse                      bool
}

func newMemService() *memService {
	return &memService{prepared: map[embed.TxnID]bool{}, committed: map[embed.TxnID]bool{}, aborts: map[embed.TxnID]bool{}}
}

func (m *memService) Prepare(_ context.Context, txn embed.TxnID, _ []byte) (embed.Vote, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuse {
		return embed.No, nil
	}
	m.prepared[txn] = true
	return embed.Yes, nil
}

func (m *memService) Commit(_ context.Context, txn embed.TxnID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.prepared, txn)
	m.committed[txn] = true
	return nil
}

func (m *memService) Abort(_ context.Context, txn embed.TxnID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.prepared, txn)
	m.aborts[txn] = true
	return nil
}

func (m *memService) Prepared(context.Context) ([]embed.TxnID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []embed.TxnID
	for id := range m.prepared {
		ids = append(ids, id)
	}
	return ids, nil
}

func (m *memService) is(txn embed.TxnID, in map[embed.TxnID]bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return in[txn]
}

// Two Go services embed participants over Services: a transaction commits
// at both, and one the second refuses aborts at both.
func TestServices(t *testing.T) {
	dir := t.TempDir()
	ln := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	cln, aln, bln := ln(), ln(), ln()
	coord, err := coordinator.Start(coordinator.Config{Listener: cln, DataDir: filepath.Join(dir, "c"), SegmentBytes: 1 << 20,
		Logger: nodetest.Quiet(), Participants: map[string]string{"a": aln.Addr().String(), "b": bln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	svcs := map[string]*memService{"a": newMemService(), "b": newMemService()}
	for name, l := range map[string]net.Listener{"a": aln, "b": bln} {
		p, err := embed.Start(embed.Config{Name: name, Listener: l, DataDir: filepath.Join(dir, name),
			Coordinator: cln.Addr().String(), Service: svcs[name], SegmentBytes: 1 << 20, Logger: nodetest.Quiet()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	// The participants have dialed the coordinator; it must also have
	// dialed them, or the first transaction aborts as unreachable.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := coord.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(cln.Addr().String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	run := func() (embed.TxnID, client.Outcome) {
		id := uuid.Must(uuid.NewV7())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := cl.Run(ctx, id, []client.Branch{{Participant: "a", Work: []byte("x")}, {Participant: "b", Work: []byte("y")}})
		if err != nil {
			t.Fatal(err)
		}
		return id, res.Outcome
	}
	id, o := run()
	if o != client.Committed {
		t.Fatalf("outcome %v", o)
	}
	nodetest.Eventually(t, "the commit at both", func() bool {
		return svcs["a"].is(id, svcs["a"].committed) && svcs["b"].is(id, svcs["b"].committed)
	})
	svcs["b"].mu.Lock()
	svcs["b"].refuse = true
	svcs["b"].mu.Unlock()
	id, o = run()
	if o != client.Aborted {
		t.Fatalf("outcome %v", o)
	}
	nodetest.Eventually(t, "a's prepare aborted", func() bool { return svcs["a"].is(id, svcs["a"].aborts) })
	if svcs["a"].is(id, svcs["a"].committed) || svcs["b"].is(id, svcs["b"].committed) {
		t.Fatal("an aborted transaction committed")
	}
}
