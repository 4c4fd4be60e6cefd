package remote_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/httpres"
	"github.com/commitd/commitd/participant/httpres/refservice"
	"github.com/commitd/commitd/participant/remote"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

// service is a reference service whose /commit can be made to fail.
type service struct {
	store       *refservice.Store
	srv         *httptest.Server
	failCommits atomic.Bool
}

func newService(t *testing.T, balances map[string]int64) *service {
	st, err := refservice.Open(filepath.Join(t.TempDir(), "journal"), balances)
	if err != nil {
		t.Fatal(err)
	}
	s := &service{store: st}
	h := refservice.Handler(st)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/commit" && s.failCommits.Load() {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { s.srv.Close(); st.Close() })
	return s
}

// part is an HTTP participant whose log lives in a crashable file system.
type part struct {
	name, addr, dir, coord string
	svc                    *service
	fs                     *waltest.MemFS
	srv                    *participant.Server
	bugs                   func(*remote.Resource)
}

func (p *part) start(t *testing.T) {
	t.Helper()
	c, err := httpres.New(p.svc.srv.URL, nodetest.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	res := remote.New(c, remote.Options{PrepareTimeout: time.Second, RetryMin: time.Millisecond,
		RetryMax: 20 * time.Millisecond, ScanEvery: 20 * time.Millisecond, Logger: nodetest.Quiet()})
	p.bugs(res)
	p.srv, err = participant.Start(participant.Config{Name: p.name, Listen: p.addr, DataDir: p.dir,
		Coordinator: p.coord, Resource: res, FS: p.fs, SegmentBytes: 1 << 20, CheckpointEvery: 2,
		InquireAfter: 50 * time.Millisecond, InquireMax: 200 * time.Millisecond, Logger: nodetest.Quiet()})
	if err != nil {
		res.Close()
		t.Fatal(err)
	}
}

// crash keeps what the log had synced (and, by rng, some of the rest),
// stops the old server and starts a new one on what survived.
func (p *part) crash(t *testing.T, rng *rand.Rand) {
	t.Helper()
	survived := p.fs.Crash(rng)
	p.srv.Close() // fails: its file system is gone
	p.fs = survived
	p.start(t)
}

// crashRun runs transfers from alice (at service a) to bob (at b) while
// participant b crashes four times, two of them while b's service fails
// every commit, so that decisions wait in checkpoints; then it lets
// everything settle and returns what the checker found.
func crashRun(t *testing.T, seed uint64, bugs func(*remote.Resource)) error {
	rng := rand.New(rand.NewPCG(seed, seed))
	const money = 1_000_000
	sa, sb := newService(t, map[string]int64{"alice": money}), newService(t, map[string]int64{"bob": 0})
	dir := t.TempDir()
	coordAddr := nodetest.FreeAddr(t)
	pa := &part{name: "a", addr: nodetest.FreeAddr(t), dir: filepath.Join(dir, "a"), coord: coordAddr, svc: sa, fs: waltest.NewMemFS(), bugs: func(*remote.Resource) {}}
	pb := &part{name: "b", addr: nodetest.FreeAddr(t), dir: filepath.Join(dir, "b"), coord: coordAddr, svc: sb, fs: waltest.NewMemFS(), bugs: bugs}
	coord, err := coordinator.Start(coordinator.Config{Listen: coordAddr, DataDir: filepath.Join(dir, "coordinator"),
		Participants: map[string]string{"a": pa.addr, "b": pb.addr}, PrepareTimeout: time.Second, SegmentBytes: 1 << 20,
		RedeliverMin: 10 * time.Millisecond, RedeliverMax: 50 * time.Millisecond, Logger: nodetest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	pa.start(t)
	pb.start(t)
	defer func() { pa.srv.Close(); pb.srv.Close() }()
	cl, err := client.Dial(coordAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	var (
		mu                 sync.Mutex
		committed, aborted = map[string]bool{}, map[string]bool{}
		stop               atomic.Bool
		wg                 sync.WaitGroup
	)
	work := func(account string, delta int) []byte {
		b, _ := json.Marshal(map[string]any{"account": account, "delta": delta})
		return b
	}
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				id := uuid.Must(uuid.NewV7())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := cl.Run(ctx, id, []client.Branch{
					{Participant: "a", Work: work("alice", -1)},
					{Participant: "b", Work: work("bob", 1)},
				})
				cancel()
				mu.Lock()
				if err == nil && res.Outcome == protocol.OutcomeCommitted {
					committed[id.String()] = true
				} else if err == nil && res.Outcome == protocol.OutcomeAborted {
					aborted[id.String()] = true
				}
				mu.Unlock()
				if err != nil || res.Outcome != protocol.OutcomeCommitted {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}()
	}
	waitCommits := func(n int) {
		mu.Lock()
		want := len(committed) + n
		mu.Unlock()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			mu.Lock()
			got := len(committed)
			mu.Unlock()
			if got >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d more commits", got-want+n, n)
			}
		}
	}
	for round := range 4 {
		fail := round%2 == 0
		sb.failCommits.Store(fail)
		waitCommits(30)
		pb.crash(t, rng)
		sb.failCommits.Store(false)
	}
	waitCommits(20)
	stop.Store(true)
	wg.Wait()
	return check(sa, sb, committed, aborted, money)
}

// check waits until neither service holds anything prepared (10 s), then
// compares: the same transactions committed at both, among them every one
// the client was told committed and none it was told aborted, and the
// money adds up.
func check(sa, sb *service, committed, aborted map[string]bool, money int64) error {
	var a, b refservice.State
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		a, _ = sa.store.Snapshot()
		b, _ = sb.store.Snapshot()
		if len(a.Prepared)+len(b.Prepared) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still prepared after 10 s: %d at a, %d at b", len(a.Prepared), len(b.Prepared))
		}
	}
	var errs []error
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, id := range a.Committed {
		inA[id] = true
	}
	for _, id := range b.Committed {
		inB[id] = true
	}
	var only []string
	for id := range inA {
		if !inB[id] {
			only = append(only, id+" at a")
		}
		if aborted[id] {
			errs = append(errs, fmt.Errorf("%s committed, the client was told aborted", id))
		}
	}
	for id := range inB {
		if !inA[id] {
			only = append(only, id+" at b")
		}
	}
	sort.Strings(only)
	if len(only) > 0 {
		errs = append(errs, fmt.Errorf("atomicity: %d transactions committed at one service only, e.g. %s", len(only), only[0]))
	}
	for id := range committed {
		if !inA[id] || !inB[id] {
			errs = append(errs, fmt.Errorf("%s acknowledged committed, at a %v, at b %v", id, inA[id], inB[id]))
		}
	}
	if a.Total+b.Total != money {
		errs = append(errs, fmt.Errorf("money: %d + %d != %d", a.Total, b.Total, money))
	}
	return errors.Join(errs...)
}

// TestCrashesKeepAtomicity crashes an HTTP participant four times under
// load, keeping only what its log had synced (and a random part of the
// rest) — stronger than kill -9, which keeps the page cache — two of the
// times while its service refuses every commit, so that decisions the
// service has not taken sit in checkpoints across the crash.
func TestCrashesKeepAtomicity(t *testing.T) {
	if testing.Short() {
		t.Skip("crashes a participant under load")
	}
	if err := crashRun(t, 1, func(*remote.Resource) {}); err != nil {
		t.Fatal(err)
	}
}

// Each planted bug breaks atomicity in the run above, and the checker
// must say so.
func TestCrashesCatchPlantedBugs(t *testing.T) {
	if testing.Short() {
		t.Skip("crashes a participant under load")
	}
	for _, tc := range []struct {
		name string
		bug  func(*remote.Resource)
	}{
		{"scan aborts what it holds prepared", func(r *remote.Resource) { r.Plant(remote.BugScanAbortsHeld) }},
		{"checkpoints forget undelivered decisions", func(r *remote.Resource) { r.Plant(remote.BugSnapshotForgets) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := crashRun(t, 1, tc.bug)
			if err == nil {
				t.Fatal("the planted bug went unnoticed")
			}
			t.Logf("caught: %v", firstLine(err))
		})
	}
}

func firstLine(err error) string {
	s := err.Error()
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
