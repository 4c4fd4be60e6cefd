package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

	cl, err := client.Dial(coord, client.Options{})
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
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				id := uuid.Must(uuid.NewV7())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := cl.Run(ctx, id, []client.Branch{
					{Participant: "a", Work: work("alice", -3)},
					{Participant: "b", Work: work("bob", 3)},
				})
				cancel()
				mu.Lock()
				switch {
				case err != nil:
				case res.Outcome == protocol.OutcomeCommitted:
					committed[id.String()] = true
				case res.Outcome == protocol.OutcomeAborted:
					aborted[id.String()] = true
				}
				mu.Unlock()
				if err != nil || res.Outcome != protocol.OutcomeCommitted {
					time.Sleep(5 * time.Millisecond) // a server is down: do not spin
				}
			}
		}()
	}
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
	mu.Lock()
	before := len(committed)
	mu.Unlock()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(committed)
		mu.Unlock()
		if n >= before+50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d commits after the restarts", n-before)
		}
	}
	stop.Store(true)
	wg.Wait()

	// Settle: nothing prepared at either service.
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
