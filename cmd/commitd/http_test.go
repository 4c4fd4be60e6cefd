package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/httpres/refservice"
	"github.com/commitd/commitd/participant/remote"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

var (
	refBinary     string
	refBinaryOnce sync.Once
)

// refserviceBinary builds cmd/refservice once, next to commitd.
func refserviceBinary(t *testing.T) string {
	t.Helper()
	refBinaryOnce.Do(func() {
		path := filepath.Join(filepath.Dir(binary), "refservice")
		if out, err := exec.Command("go", "build", "-o", path, "../refservice").CombinedOutput(); err != nil {
			t.Fatalf("building refservice: %v\n%s", err, out)
		}
		refBinary = path
	})
	if refBinary == "" {
		t.Fatal("refservice did not build")
	}
	return refBinary
}

// proc is a server process a test starts, kills and restarts.
type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	p := &proc{t: t, name: name, args: args, env: env}
	p.start()
	t.Cleanup(func() {
		if p.cmd != nil {
			p.cmd.Process.Signal(os.Interrupt)
			<-p.done
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.name, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(p.cmd, p.done)
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) pause()  { p.cmd.Process.Signal(syscall.SIGSTOP) }
func (p *proc) resume() { p.cmd.Process.Signal(syscall.SIGCONT) }

// restart starts the process again (after it died or was killed), with
// env instead of the first start's environment.
func (p *proc) restart(env []string) {
	<-p.done
	p.env = env
	p.start()
}

func serviceState(t *testing.T, url string) refservice.State {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(url + "/state")
		if err == nil {
			var st refservice.State
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s/state: %v", url, err)
		}
	}
}

// TestHTTPParticipantsSurviveKills runs transfers between two reference
// services, each behind a commitd HTTP participant, all separate
// processes. Participant a kills itself (the test hook
// COMMITD_TEST_CRASH_AFTER_YES) right after its service voted YES and
// before it recorded anything; service b is killed -9 and restarted under
// load. Afterwards: nothing is left prepared, the two services committed
// exactly the same transactions — every one the client was told committed
// and none it was told aborted — and the money adds up; the YES that a
// never recorded was found by its scan and aborted.
func TestHTTPParticipantsSurviveKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five processes")
	}
	ref := refserviceBinary(t)
	dir := t.TempDir()
	coord, pa, pb, sa, sb := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	urlA, urlB := "http://"+sa, "http://"+sb
	const money = 1000000
	startProc(t, ref, nil, "--listen", sa, "--data", filepath.Join(dir, "a.journal"), "--accounts", fmt.Sprintf("alice=%d", money))
	svcB := startProc(t, ref, nil, "--listen", sb, "--data", filepath.Join(dir, "b.journal"), "--accounts", "bob=0")
	part := func(name, listen, url string) []string {
		return []string{"participant", "--name", name, "--listen", listen, "--data", filepath.Join(dir, name),
			"--coordinator", coord, "--backend", "http", "--url", url, "--prepare-timeout", "1s",
			"--retry-max", "100ms", "--scan-every", "500ms", "--inquire-after", "200ms", "--segment-size", "1MiB", "--log-level", "error"}
	}
	partA := startProc(t, binary, []string{crashEnv + "=40"}, part("a", pa, urlA)...)
	startProc(t, binary, nil, part("b", pb, urlB)...)
	startProc(t, binary, nil, "coordinator", "--listen", coord, "--data", filepath.Join(dir, "c"),
		"--participant", "a="+pa+",b="+pb, "--segment-size", "1MiB", "--prepare-timeout", "2s", "--log-level", "error")
	for _, addr := range []string{sa, sb, pa, pb, coord} {
		waitListening(t, addr)
	}
	waitCommitting(t, coord, "a", "b")

	load := startTransfers(t, coord, 8)
	// Participant a kills itself at its 40th YES.
	select {
	case <-partA.done:
	case <-time.After(60 * time.Second):
		t.Fatal("participant a did not crash at its hook")
	}
	svcB.kill()
	time.Sleep(200 * time.Millisecond) // load against the dead ones
	svcB.restart(nil)
	partA.restart(nil)
	waitListening(t, pa)
	// Load until more transactions commit after the restarts.
	load.waitCommits(t, 50, 60*time.Second)
	committed, aborted := load.stop()

	checkServices(t, urlA, urlB, committed, aborted, money)
	var st participant.Status
	if err := client.Admin(context.Background(), pa, "status", nil, &st); err != nil {
		t.Fatal(err)
	}
	var rs remote.Stats
	raw, _ := json.Marshal(st.Resource)
	json.Unmarshal(raw, &rs)
	if rs.Orphans < 1 {
		t.Errorf("restarted participant a aborted no orphan: the YES it never recorded was not settled by its scan (status %s)", raw)
	}
	t.Logf("%d committed, %d aborted; a's resource after restart: %s", len(committed), len(aborted), raw)
}

// checkServices waits until neither service holds anything prepared, then
// checks that both committed exactly the same transactions — every one
// the client was told committed, none it was told aborted — and that the
// money adds up.
func checkServices(t *testing.T, urlA, urlB string, committed, aborted map[string]bool, money int64) {
	t.Helper()
	var stA, stB refservice.State
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		stA, stB = serviceState(t, urlA), serviceState(t, urlB)
		if len(stA.Prepared)+len(stB.Prepared) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still prepared: a %v, b %v", stA.Prepared, stB.Prepared)
		}
	}
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, id := range stA.Committed {
		inA[id] = true
	}
	for _, id := range stB.Committed {
		inB[id] = true
	}
	// waitCommitting's opaque transactions are committed at both too.
	for id := range inA {
		if !inB[id] {
			t.Errorf("%s committed at a, not at b", id)
		}
		if aborted[id] {
			t.Errorf("%s committed at a, the client was told aborted", id)
		}
	}
	for id := range inB {
		if !inA[id] {
			t.Errorf("%s committed at b, not at a", id)
		}
	}
	for id := range committed {
		if !inA[id] || !inB[id] {
			t.Errorf("%s acknowledged committed, a %v b %v", id, inA[id], inB[id])
		}
	}
	if stA.Total+stB.Total != money {
		t.Errorf("money: a %d + b %d != %d", stA.Total, stB.Total, money)
	}
}

// transfers is a load of transfers of 3 from alice (at participant a) to
// bob (at b), and what the callers were told.
type transfers struct {
	cl                 *client.Client
	mu                 sync.Mutex
	committed, aborted map[string]bool
	halt               atomic.Bool
	wg                 sync.WaitGroup
}

func startTransfers(t *testing.T, coord string, callers int) *transfers {
	t.Helper()
	cl, err := client.Dial(coord, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := &transfers{cl: cl, committed: map[string]bool{}, aborted: map[string]bool{}}
	t.Cleanup(func() { l.stop(); cl.Close() })
	work := func(account string, delta int) []byte {
		b, _ := json.Marshal(map[string]any{"account": account, "delta": delta})
		return b
	}
	for range callers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for !l.halt.Load() {
				id := uuid.Must(uuid.NewV7())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := cl.Run(ctx, id, []client.Branch{
					{Participant: "a", Work: work("alice", -3)},
					{Participant: "b", Work: work("bob", 3)},
				})
				cancel()
				l.mu.Lock()
				switch {
				case err != nil:
				case res.Outcome == protocol.OutcomeCommitted:
					l.committed[id.String()] = true
				case res.Outcome == protocol.OutcomeAborted:
					l.aborted[id.String()] = true
				}
				l.mu.Unlock()
				if err != nil || res.Outcome != protocol.OutcomeCommitted {
					time.Sleep(5 * time.Millisecond) // a server is down: do not spin
				}
			}
		}()
	}
	return l
}

// waitCommits waits until n more transactions have committed.
func (l *transfers) waitCommits(t *testing.T, n int, bound time.Duration) {
	t.Helper()
	l.mu.Lock()
	want := len(l.committed) + n
	l.mu.Unlock()
	for deadline := time.Now().Add(bound); ; time.Sleep(20 * time.Millisecond) {
		l.mu.Lock()
		got := len(l.committed)
		l.mu.Unlock()
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d more commits within %v", got-want+n, n, bound)
		}
	}
}

// stop ends the load and returns what the callers were told.
func (l *transfers) stop() (committed, aborted map[string]bool) {
	l.halt.Store(true)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committed, l.aborted
}

// TestHTTPChaos is the HTTP participants' chaos run: two reference
// services, two HTTP participants and a coordinator, separate processes
// under 8 callers, while a seeded nemesis kills -9 and restarts, or
// SIGSTOPs and resumes, one of the five at a time. Then everything is up,
// fresh transactions must still commit (liveness), and checkServices
// checks atomicity, acknowledged commits and conservation. It runs for
// COMMITD_HTTP_CHAOS (default 6s; `make chaos-http` runs it longer);
// CHAOS_SEED replays a run's choices.
func TestHTTPChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five processes and kills them for seconds")
	}
	duration := 6 * time.Second
	if v := os.Getenv("COMMITD_HTTP_CHAOS"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("COMMITD_HTTP_CHAOS=%q: want a positive duration", v)
		}
		duration = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", v)
		}
		seed = n
	}
	t.Logf("seed %d (replay with CHAOS_SEED=%d), %v of faults", seed, seed, duration)
	rng := rand.New(rand.NewPCG(seed, seed))
	ref := refserviceBinary(t)
	dir := t.TempDir()
	coord, pa, pb, sa, sb := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	urlA, urlB := "http://"+sa, "http://"+sb
	const money = 1000000
	part := func(name, listen, url string) []string {
		return []string{"participant", "--name", name, "--listen", listen, "--data", filepath.Join(dir, name),
			"--coordinator", coord, "--backend", "http", "--url", url, "--prepare-timeout", "1s",
			"--retry-max", "100ms", "--scan-every", "300ms", "--inquire-after", "200ms", "--inquire-max", "1s",
			"--segment-size", "1MiB", "--checkpoint-every", "50", "--log-level", "error"}
	}
	procs := []*proc{
		startProc(t, ref, nil, "--listen", sa, "--data", filepath.Join(dir, "a.journal"), "--accounts", fmt.Sprintf("alice=%d", money)),
		startProc(t, ref, nil, "--listen", sb, "--data", filepath.Join(dir, "b.journal"), "--accounts", "bob=0"),
		startProc(t, binary, nil, part("a", pa, urlA)...),
		startProc(t, binary, nil, part("b", pb, urlB)...),
		startProc(t, binary, nil, "coordinator", "--listen", coord, "--data", filepath.Join(dir, "c"),
			"--participant", "a="+pa+",b="+pb, "--segment-size", "1MiB", "--prepare-timeout", "2s",
			"--redeliver-min", "50ms", "--redeliver-max", "500ms", "--log-level", "error"),
	}
	names := []string{"service a", "service b", "participant a", "participant b", "coordinator"}
	addrs := []string{sa, sb, pa, pb, coord}
	for _, addr := range addrs {
		waitListening(t, addr)
	}
	waitCommitting(t, coord, "a", "b")
	load := startTransfers(t, coord, 8)
	faults := map[string]int{}
	for end := time.Now().Add(duration); time.Now().Before(end); {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		i := rng.IntN(len(procs))
		down := time.Duration(rng.IntN(400)) * time.Millisecond
		if rng.IntN(3) < 2 {
			procs[i].kill()
			time.Sleep(down)
			procs[i].restart(nil)
			faults["kill -9 "+names[i]]++
		} else {
			procs[i].pause()
			time.Sleep(down)
			procs[i].resume()
			faults["SIGSTOP "+names[i]]++
		}
	}
	t.Logf("faults: %v", faults)
	for _, addr := range addrs {
		waitListening(t, addr)
	}
	load.waitCommits(t, 20, 60*time.Second) // liveness: the cluster commits again
	committed, aborted := load.stop()
	checkServices(t, urlA, urlB, committed, aborted, money)
	t.Logf("%d committed, %d aborted", len(committed), len(aborted))
}
