package cluster_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	commitdcluster "github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// commitdBinary builds cmd/commitd once for the tests that run it as
// processes (SIGHUP goes to a process).
func commitdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "commitd-harness-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "commitd")
		if out, err := exec.Command("go", "build", "-o", binPath, "github.com/commitd/commitd/cmd/commitd").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building commitd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// A cluster's map changes under load, with real processes, as an operator
// changes it (docs/scale.md, "Adding a group", "Removing a group"):
// groups 1 and 2 run transfers between two bank participants; group 3 is
// started, the map that adds it is written and the participants are sent
// SIGHUP, then the client takes it (client.Replace) and new transactions
// land on group 3; group 2 is drained (weight 0: the client stamps no new
// id for it), and once its `admin status` shows nothing in flight or
// unacknowledged, it is retired and stopped. A map that does not parse is
// refused on SIGHUP and the one in use kept. Everything settles, money is
// conserved, and no participant had to abort anything for the retired
// group (it was drained).
func TestMapChangesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs commitd processes")
	}
	bin := commitdBinary(t)
	const accounts, balance = 50, 1000
	dir := t.TempDir()
	coordAddr := []string{nodetest.FreeAddr(t), nodetest.FreeAddr(t), nodetest.FreeAddr(t)}
	partAddr := []string{nodetest.FreeAddr(t), nodetest.FreeAddr(t)}
	mapFile := filepath.Join(dir, "cluster.map")
	writeMap := func(text string) *commitdcluster.Map {
		t.Helper()
		if err := os.WriteFile(mapFile+".new", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(mapFile+".new", mapFile); err != nil { // never half a file
			t.Fatal(err)
		}
		m, err := commitdcluster.Parse(strings.NewReader(text), mapFile)
		if err != nil {
			return nil
		}
		return m
	}
	mapText := func(v int, group2, group3 string) string {
		s := fmt.Sprintf("version %d\ngroup 1 replicas 1=%s weight 1\ngroup 2 replicas 1=%s %s\n", v, coordAddr[0], coordAddr[1], group2)
		if group3 != "" {
			s += fmt.Sprintf("group 3 replicas 1=%s %s\n", coordAddr[2], group3)
		}
		return s
	}
	m1 := writeMap(mapText(1, "weight 1", ""))

	procs := map[string]*exec.Cmd{}
	start := func(name string, args ...string) {
		cmd := exec.Command(bin, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[name] = cmd
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		})
	}
	stopProc := func(name string) {
		cmd := procs[name]
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s stopped with %v", name, err)
		}
	}
	parts := "p1=" + partAddr[0] + ",p2=" + partAddr[1]
	startCoord := func(g int) {
		start(fmt.Sprintf("c%d", g), "coordinator", "--group", fmt.Sprint(g), "--listen", coordAddr[g-1],
			"--data", filepath.Join(dir, fmt.Sprintf("c%d", g)), "--participant", parts, "--prepare-timeout", "500ms",
			"--cluster", mapFile)
	}
	for i, addr := range partAddr {
		start(fmt.Sprintf("p%d", i+1), "participant", "--name", fmt.Sprintf("p%d", i+1), "--listen", addr,
			"--data", filepath.Join(dir, fmt.Sprintf("p%d", i+1)), "--cluster", mapFile,
			"--accounts", fmt.Sprint(accounts), "--balance", fmt.Sprint(balance),
			"--inquire-after", "50ms", "--inquire-max", "200ms")
	}
	startCoord(1)
	startCoord(2)
	// hup sends SIGHUP to every process still running: the participants
	// and the coordinators re-read the map file.
	hup := func() {
		for name, p := range procs {
			if p.ProcessState == nil {
				if err := p.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatalf("SIGHUP to %s: %v", name, err)
				}
			}
		}
	}
	partStatus := func(i int) participant.Status {
		var st participant.Status
		nodetest.Report(t, partAddr[i], "status", &st)
		return st
	}
	coordStatus := func(g int) coordinator.Status {
		var st coordinator.Status
		nodetest.Report(t, coordAddr[g-1], "status", &st)
		return st
	}
	waitMapVersion := func(v uint64) {
		t.Helper()
		nodetest.Eventually(t, fmt.Sprintf("both participants on map version %d", v), func() bool {
			return partStatus(0).MapVersion == v && partStatus(1).MapVersion == v
		})
	}
	listening := func(addrs ...string) {
		t.Helper()
		for _, addr := range addrs {
			nodetest.Eventually(t, addr+" listening", func() bool {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					c.Close()
				}
				return err == nil
			})
		}
	}
	listening(partAddr[0], partAddr[1], coordAddr[0], coordAddr[1])
	waitMapVersion(1)

	cl, err := client.DialCluster(m1, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Transfers of 1 between p1 and p2 from 6 callers until stop; each
	// caller counts the commits per group.
	var committed [4]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, err := cl.NewID()
				if err != nil {
					t.Error(err)
					return
				}
				from, to := 1, 2
				if i%2 == 1 {
					from, to = 2, 1
				}
				acct := uint32((c*7 + i) % accounts)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, _ := cl.Run(ctx, id, []client.Branch{
					{Participant: fmt.Sprintf("p%d", from), Work: bank.AppendWork(nil, acct, -1)},
					{Participant: fmt.Sprintf("p%d", to), Work: bank.AppendWork(nil, acct, 1)},
				})
				cancel()
				if res.Outcome == client.Committed {
					committed[commitdcluster.GroupOf(id)].Add(1)
				}
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	nodetest.Eventually(t, "groups 1 and 2 committing", func() bool { return committed[1].Load() > 30 && committed[2].Load() > 30 })

	// Group 3 added: the map written, group 3 started on it, then the
	// participants (and the other groups) told, then the client.
	m2 := writeMap(mapText(2, "weight 1", "weight 2"))
	startCoord(3)
	listening(coordAddr[2])
	hup()
	waitMapVersion(2)
	if err := cl.Replace(m2); err != nil {
		t.Fatal(err)
	}
	// 30 s, not 10: at load 7-9 on 2 cores this wait failed 2 times in 16
	// runs at 10 s, and passed alone and in 14 runs after (cause not found:
	// group 3 is dialled by the participants at their reload and dials them
	// at its start, and ids for it come once the client has the new map).
	// A group that never commits still fails here.
	nodetest.EventuallyWithin(t, 30*time.Second, "group 3 committing", func() bool { return committed[3].Load() > 30 })

	// A map that does not parse: refused, the participants keep version 2.
	writeMap(mapText(3, "weight 1", "weight 2") + "group x\n")
	hup()
	time.Sleep(300 * time.Millisecond)
	waitMapVersion(2)

	// Group 2 drained, then retired once its status says it is empty.
	m3 := writeMap(mapText(3, "draining", "weight 2"))
	hup()
	waitMapVersion(3)
	if err := cl.Replace(m3); err != nil {
		t.Fatal(err)
	}
	before := committed[2].Load()
	// Group 2 now refuses new transactions, naming the map's version.
	c2, err := client.Dial(coordAddr[1], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, "group 2 refusing new transactions", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, _ := c2.Run(ctx, commitdcluster.Stamp(uuid.Must(uuid.NewV7()), 2), []client.Branch{{Participant: "p1", Work: bank.AppendWork(nil, 0, 0)}})
		return res.Outcome == client.Rejected && strings.Contains(res.Detail, "group 2 is draining in cluster map version 3")
	})
	c2.Close()
	nodetest.Eventually(t, "group 2 drained", func() bool {
		st := coordStatus(2)
		return st.InFlight == 0 && st.InDoubt == 0 && st.Undecided == 0
	})
	// The id lifetime (protocol.md "Transaction ids have a lifetime")
	// passes before the group is retired: no late begin can reach it.
	time.Sleep(time.Second)
	m4 := writeMap(mapText(4, "retired", "weight 2"))
	hup()
	waitMapVersion(4)
	if err := cl.Replace(m4); err != nil {
		t.Fatal(err)
	}
	stopProc("c2")
	after := committed[2].Load()
	g1, g3 := committed[1].Load(), committed[3].Load()
	nodetest.Eventually(t, "groups 1 and 3 still committing", func() bool {
		return committed[1].Load() > g1+20 && committed[3].Load() > g3+20
	})
	close(stop)
	wg.Wait()
	if committed[2].Load() != after {
		t.Fatalf("group 2 committed %d transactions after it was retired", committed[2].Load()-after)
	}
	t.Logf("committed by group: 1: %d, 2: %d (%d once draining), 3: %d", committed[1].Load(), committed[2].Load(), after-before, committed[3].Load())

	// Everything settles; money is conserved; nothing had to be aborted
	// for the retired group, which was drained.
	var total int64
	nodetest.Eventually(t, "nothing in doubt at the participants", func() bool {
		total = 0
		for i := range partAddr {
			var a participant.Accounts
			nodetest.Report(t, partAddr[i], "accounts", &a)
			if a.Prepared != 0 {
				return false
			}
			total += a.Total
		}
		return true
	})
	if want := int64(2 * accounts * balance); total != want {
		t.Fatalf("money: %d, want %d", total, want)
	}
	for i := range partAddr {
		if st := partStatus(i); st.RetiredAborts != 0 || st.UnknownGroup != 0 {
			t.Errorf("p%d: %d aborts for the retired group, %d messages for unknown groups; want none", i+1, st.RetiredAborts, st.UnknownGroup)
		}
	}
}
