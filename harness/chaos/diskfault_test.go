package chaos

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

// TestDiskFaults fails the disk under a coordinator or a participant while
// transfers run — an fsync that returns EIO, or a write that finds the disk
// full — and checks that the node stops (reports the error, refuses new
// work), and that once it is started again on what its disk had synced
// (plus a torn tail of the rest), nothing the clients were told is
// contradicted, no money is created or lost, nothing stays in doubt and
// new transfers commit.
func TestDiskFaults(t *testing.T) {
	faults := []struct {
		name string
		hook func() func(waltest.Op) error
	}{
		{"fsync fails", func() func(waltest.Op) error {
			return waltest.FailNth(waltest.OpSync, 1, syscall.EIO, true)
		}},
		{"disk full", func() func(waltest.Op) error {
			return waltest.FailNth(waltest.OpWrite, 1, waltest.ErrNoSpace, true)
		}},
	}
	for _, node := range []string{"coordinator", "participant"} {
		for fi, f := range faults {
			t.Run(node+"/"+f.name, func(t *testing.T) {
				seed := uint64(len(node)*10 + fi)
				diskFault(t, node, f.hook(), seed)
			})
		}
	}
}

func diskFault(t *testing.T, node string, hook func(waltest.Op) error, seed uint64) {
	const accounts = 200
	m := newMemCluster(t, 2, accounts)
	l := startLoad(t, m.coordAdr, m.names, accounts, 16, seed)
	waitCommits(t, l, 200, 20*time.Second)

	// The fault.
	var fs *waltest.MemFS
	var done <-chan struct{}
	var errFn func() error
	if node == "coordinator" {
		fs, done, errFn = m.coordFS, m.coord.Done(), m.coord.Err
	} else {
		fs, done, errFn = m.partFS[0], m.parts[0].Done(), m.parts[0].Err
	}
	fs.Inject(hook)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after its disk failed", node)
	}
	if errFn() == nil {
		t.Fatalf("%s stopped without reporting an error", node)
	}
	t.Logf("%s stopped: %v", node, errFn())
	// It refuses new work: a transfer through it does not commit.
	if res, err := runOne(m.coordAdr, m.names); res.Outcome == client.Committed {
		t.Fatalf("a transfer committed with the %s's disk failed: %v %v", node, res, err)
	}

	// Clear the fault: the machine comes back with what the disk had
	// synced, and perhaps a torn part of the rest.
	crashed := fs.Crash(rand.New(rand.NewPCG(seed, 1)))
	if node == "coordinator" {
		m.coordFS = crashed
		waitListenable(t, m.coordAdr)
		m.startCoordinator()
	} else {
		m.partFS[0] = crashed
		waitListenable(t, m.addrs[0])
		m.startParticipant(0)
	}
	m.waitConnected()
	// The load runs on over the restarted node.
	waitCommits(t, l, l.committed.Load()+100, 20*time.Second)
	acks := l.end()
	if !m.waitQuiet(30 * time.Second) {
		t.Errorf("still in doubt 30s after the restart")
	}
	probes := 5
	ok := probeCommits(t, m.coordAdr, m.names, accounts, probes)
	m.waitQuiet(10 * time.Second)
	r := checkHistory(t, m.history(acks, probes, ok))
	t.Logf("%d transactions: %d committed, %d aborted, %d unknown (%d of them committed by recovery)",
		len(acks), r.Told[ToldCommitted], r.Told[ToldAborted], r.Told[ToldUnknown], r.UnknownCommitted)
}

// runOne runs one transfer of 1 and returns its answer.
func runOne(addr string, names []string) (client.Result, error) {
	cl, err := client.Dial(addr, client.Options{DialTimeout: time.Second})
	if err != nil {
		return client.Result{Outcome: client.Aborted}, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
		{Participant: names[0], Work: bank.AppendWork(nil, 0, -1)},
		{Participant: names[1], Work: bank.AppendWork(nil, 0, 1)},
	})
}

// waitListenable waits until a stopped server's address is free again.
func waitListenable(t *testing.T, addr string) {
	deadline := time.Now().Add(5 * time.Second)
	for !listenable(addr) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still in use", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCommits waits until the load has had n commits.
func waitCommits(t *testing.T, l *load, n int64, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for l.committed.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d commits after %v, want %d", l.committed.Load(), bound, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
