package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// TestBenchCluster drives a cluster of coordinator groups with `commitd
// bench --cluster`, as separate processes: two groups at first, and a
// third added during the run — its coordinator started mid-run (the
// participants' map declared it with weight 0 from the start), then the
// bench's map file rewritten with a new version that gives it weight, and
// SIGHUP. The report has every group's share, the groups add up to the
// total, each group committed, and the money is conserved over all of
// them. Then admin status --cluster sees the three groups; and a map file
// that is wrong or missing is refused in one line.
func TestBenchCluster(t *testing.T) {
	dir := t.TempDir()
	c1, c2, c3, p1, p2 := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	parts := fmt.Sprintf("participant p1=%s\nparticipant p2=%s\n", p1, p2)
	writeMap := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	partMap := writeMap("participants.map", fmt.Sprintf("version 2\ngroup 1 replicas 1=%s\ngroup 2 replicas 1=%s\ngroup 3 replicas 1=%s weight 0\n", c1, c2, c3)+parts)
	benchMap := writeMap("bench.map", fmt.Sprintf("version 1\ngroup 1 replicas 1=%s\ngroup 2 replicas 1=%s\n", c1, c2)+parts)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		})
		return cmd
	}
	for i, p := range []string{p1, p2} {
		name := fmt.Sprintf("p%d", i+1)
		start("participant", "--name", name, "--listen", p, "--data", filepath.Join(dir, name), "--cluster", partMap, "--accounts", "1000")
	}
	coord := func(g int, addr string) {
		start("coordinator", "--group", fmt.Sprint(g), "--listen", addr, "--data", filepath.Join(dir, fmt.Sprintf("c%d", g)),
			"--participant", "p1="+p1+",p2="+p2)
	}
	coord(1, c1)
	coord(2, c2)
	for _, a := range []string{p1, p2, c1, c2} {
		waitListening(t, a)
	}
	waitGroupCommitting(t, c1, 1, "p1", "p2")
	waitGroupCommitting(t, c2, 2, "p1", "p2")

	jsonPath := filepath.Join(dir, "report.json")
	const benchFor = 10 * time.Second
	b := exec.Command(binary, "bench", "--cluster", benchMap, "--duration", benchFor.String(), "--concurrency", "8",
		"--accounts", "1000", "--json", jsonPath)
	var out, errOut bytes.Buffer
	b.Stdout, b.Stderr = &out, &errOut
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	benchStart := time.Now()
	// Group 3 joins as soon as its coordinator commits.
	coord(3, c3)
	waitListening(t, c3)
	waitGroupCommitting(t, c3, 3, "p1", "p2")
	writeMap("bench.map", fmt.Sprintf("version 3\ngroup 1 replicas 1=%s\ngroup 2 replicas 1=%s\ngroup 3 replicas 1=%s weight 2\n", c1, c2, c3)+parts)
	if err := b.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(benchStart); d > benchFor-2*time.Second {
		t.Fatalf("group 3 took %v to start: the bench's run (%v) is nearly over", d, benchFor)
	}
	if err := b.Wait(); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	t.Logf("bench --cluster:\n%s", out.String())
	if !strings.Contains(errOut.String(), "cluster map version 3 in use (3 groups)") {
		t.Errorf("SIGHUP not acted on:\n%s", errOut.String())
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		bench.Report
		Conserved bool `json:"conserved"`
		Checked   bool `json:"conservation_checked"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Conserved || !rep.Checked {
		t.Errorf("conservation: checked %v, conserved %v", rep.Checked, rep.Conserved)
	}
	var sum int64
	for i, g := range rep.Groups {
		if g.Group != uint16(i+1) || g.Committed == 0 || g.P50ms <= 0 || g.CPUusPerTxn <= 0 {
			t.Errorf("group %d: %+v", i+1, g)
		}
		sum += g.Committed
	}
	if len(rep.Groups) != 3 || sum != rep.Committed || rep.Committed == 0 {
		t.Errorf("%d groups committed %d in all; the run %d", len(rep.Groups), sum, rep.Committed)
	}
	if !strings.Contains(out.String(), "groups        group") || !strings.Contains(out.String(), "conservation  total before") {
		t.Errorf("the summary lacks the groups' table or the conservation line")
	}

	// admin status --cluster sees every group, and at least what the
	// bench saw commit (the coordinators also count the warm-up probes).
	stdout, stderr, code := runCLI(t, "admin", "status", "--cluster", benchMap, "--json")
	var cs ClusterStatus
	if code != 0 || json.Unmarshal([]byte(stdout), &cs) != nil || len(cs.Groups) != 3 || cs.GroupsDown != 0 ||
		cs.Total.Committed < uint64(rep.Committed) {
		t.Errorf("admin status --cluster: exit %d, %s%s", code, stdout, stderr)
	}

	bad := writeMap("bad.map", "version 1\ngroup 1 replicas 1=h:1 weight many\n")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--cluster", bad}, 1, "--cluster: cluster map: " + bad + ":2: group 1: weight \"many\""},
		{[]string{"--cluster", filepath.Join(dir, "none.map")}, 1, "no such file or directory"},
		{[]string{"--cluster", benchMap, "--coordinator", c1}, 2, "give --coordinator or --cluster, not both"},
		{[]string{"--cluster", writeMap("noparts.map", "version 1\ngroup 1 replicas 1="+c1+"\n")}, 2, "lists no participant: give --participants"},
	} {
		_, stderr, code := runCLI(t, append([]string{"bench", "--duration", "1s"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("bench %v: exit %d, stderr %q; want exit %d and one line with %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

// waitGroupCommitting is waitCommitting for the coordinator of group g of
// a cluster: its ids are stamped with g.
func waitGroupCommitting(t *testing.T, coord string, g uint16, names ...string) {
	t.Helper()
	cl, err := client.Dial(coord, client.Options{DialTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var branches []client.Branch
	for _, n := range names {
		branches = append(branches, client.Branch{Participant: n, Work: bank.AppendWork(nil, 0, 0)})
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := cl.Run(ctx, cluster.Stamp(uuid.Must(uuid.NewV7()), g), branches)
		cancel()
		if err == nil && res.Outcome == client.Committed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d: no transaction committed within 15 s: %v %v", g, res, err)
		}
		time.Sleep(10 * time.Millisecond) // a polling interval, not a guess at readiness
	}
}
