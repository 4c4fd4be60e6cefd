package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
)

// TestClusterStatus runs two coordinator groups and two bank participants
// in this process, commits transactions through the cluster client, and
// asks `admin status --cluster` of a map that also lists a third group
// nobody runs: each live group is reported by its own counters, the total
// is their sum, and the dead group is reported down, with its replica's
// error, without failing the report.
func TestClusterStatus(t *testing.T) {
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	coordLn := []net.Listener{listen(), listen()}
	partLn := []net.Listener{listen(), listen()}
	dead := freeAddr(t)
	text := fmt.Sprintf("version 4\ngroup 1 replicas 1=%s weight 1\ngroup 2 replicas 1=%s weight 1\n",
		coordLn[0].Addr(), coordLn[1].Addr())
	m, err := cluster.Parse(strings.NewReader(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	var coords []*coordinator.Server
	for i, ln := range coordLn {
		c, err := coordinator.Start(coordinator.Config{Listener: ln, DataDir: t.TempDir(), Group: uint16(i + 1), SegmentBytes: 1 << 20,
			Participants: map[string]string{"p1": partLn[0].Addr().String(), "p2": partLn[1].Addr().String()},
			Logger:       nodetest.Quiet()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		coords = append(coords, c)
	}
	var parts []*participant.Server
	for i, ln := range partLn {
		p, err := participant.Start(participant.Config{Name: fmt.Sprintf("p%d", i+1), Listener: ln, DataDir: t.TempDir(),
			Cluster: m, Resource: bank.New(100, 100), SegmentBytes: 1 << 20, Logger: nodetest.Quiet()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		parts = append(parts, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, c := range coords {
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.DialCluster(m, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 40 {
		id, err := cl.NewID()
		if err != nil {
			t.Fatal(err)
		}
		res, err := cl.Run(ctx, id, []client.Branch{{Participant: "p1", Work: bank.AppendWork(nil, uint32(i), -1)},
			{Participant: "p2", Work: bank.AppendWork(nil, uint32(i), 1)}})
		if err != nil || res.Outcome != client.Committed {
			t.Fatalf("%+v: %v", res, err)
		}
	}

	// A shard counts a transaction committed when it replies, but the
	// figures that status reads are published after the pump's round, and
	// the reply leaves within that round: the caller can hold its answer
	// while status still says in flight (a CI run caught group 2 at 20
	// committed and 1 in flight, then 21). The figures compared below are
	// those of a settled cluster.
	nodetest.Eventually(t, "every commit counted", func() bool {
		var n uint64
		for _, c := range coords {
			st := c.Status()
			if st.InFlight != 0 {
				return false
			}
			n += st.Committed
		}
		return n == 40
	})

	// The map the operator asks with lists a group 3 that is down.
	withDead, err := cluster.Parse(strings.NewReader(text+fmt.Sprintf("group 3 replicas 1=%s weight 0\n", dead)), "test")
	if err != nil {
		t.Fatal(err)
	}
	cs := askCluster(ctx, withDead, nil, 2*time.Second)
	if cs.MapVersion != 4 || len(cs.Groups) != 3 || cs.GroupsDown != 1 {
		t.Fatalf("report %+v", cs)
	}
	var sum uint64
	for i, c := range coords {
		g, st := cs.Groups[i], c.Status()
		if g.Group != uint16(i+1) || g.Down != "" || g.Leader != coordLn[i].Addr().String() ||
			g.Totals.Committed != st.Committed || g.Totals.Committed == 0 {
			t.Errorf("group %d: %+v; its coordinator says %d committed", i+1, g, st.Committed)
		}
		sum += st.Committed
	}
	if cs.Total.Committed != sum || sum != 40 {
		t.Errorf("total committed %d, the groups' sum %d, want 40", cs.Total.Committed, sum)
	}
	if g := cs.Groups[2]; g.Down != "no replica answered" || g.Replicas[0].Error == "" {
		t.Errorf("dead group reported as %+v", g)
	}

	var out bytes.Buffer
	if err := writeClusterStatus(&out, cs); err != nil {
		t.Fatal(err)
	}
	t.Logf("admin status --cluster:\n%s", out.String())
	for _, want := range []string{"cluster map version 4: 3 groups, 1 down", "DOWN: no replica answered",
		fmt.Sprintf("group 3 replica 1 (%s): ", dead)} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}
	if !regexp.MustCompile(`(?m)^\s*total\s+\d+\s+40\s`).MatchString(out.String()) {
		t.Errorf("the table's total line does not say 40 committed:\n%s", out.String())
	}

	// Through the command line: the table, --json, and the errors.
	dir := t.TempDir()
	path := filepath.Join(dir, "map")
	if err := os.WriteFile(path, []byte(text+fmt.Sprintf("group 3 replicas 1=%s weight 0\n", dead)), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "admin", "status", "--cluster", path, "--json", "--timeout", "5s")
	var got ClusterStatus
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || got.Total.Committed != 40 || got.GroupsDown != 1 {
		t.Errorf("admin status --cluster --json: exit %d, %s%s", code, stdout, stderr)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("version 1\ngroup 1 replicas nowhere\n"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--cluster", bad}, 1, "--cluster: cluster map: " + bad + ":2: group 1: replica \"nowhere\""},
		{[]string{"--cluster", filepath.Join(dir, "none")}, 1, "no such file"},
		{[]string{"--cluster", path, "--coordinator", dead}, 2, "give --cluster, or --coordinator or --participant, not both"},
		{[]string{"--coordinator", dead, "--json"}, 2, "--json goes with --cluster"},
	} {
		_, stderr, code := runCLI(t, append([]string{"admin", "status"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("admin status %v: exit %d, stderr %q; want exit %d and one line with %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	// Every group down: the report, and a failure.
	allDead := filepath.Join(dir, "dead")
	os.WriteFile(allDead, []byte(fmt.Sprintf("version 1\ngroup 3 replicas 1=%s\n", dead)), 0o644)
	if stdout, _, code := runCLI(t, "admin", "status", "--cluster", allDead, "--timeout", "3s"); code != 1 || !strings.Contains(stdout, "DOWN") {
		t.Errorf("every group down: exit %d, %s", code, stdout)
	}
}

// TestLeaderOf picks the group's view among replicas' answers.
func TestLeaderOf(t *testing.T) {
	st := func(role string, term uint64) *coordinator.Status { return &coordinator.Status{Role: role, Term: term} }
	for _, tc := range []struct {
		sts  []*coordinator.Status
		want int
		why  string
	}{
		{[]*coordinator.Status{st("", 0)}, 0, ""},
		{[]*coordinator.Status{nil}, -1, "no replica answered"},
		{[]*coordinator.Status{st("follower", 3), st("leader", 3), nil}, 1, ""},
		// A deposed leader still says so until it hears of the new term.
		{[]*coordinator.Status{st("leader", 2), st("leader", 3), st("follower", 3)}, 1, ""},
		{[]*coordinator.Status{st("follower", 3), nil, st("candidate", 4)}, -1, "2 of 3 replicas answered, none leads"},
	} {
		got, why := leaderOf(tc.sts)
		if got != tc.want || why != tc.why {
			t.Errorf("leaderOf(%v) = %d, %q; want %d, %q", tc.sts, got, why, tc.want, tc.why)
		}
	}
}

// runCLI runs the commitd binary and returns its output and exit status.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

// TestClusterStatusMapVersions shows the map version each group's leader
// says it uses, and names a replica whose version is not the file's.
func TestClusterStatusMapVersions(t *testing.T) {
	cs := ClusterStatus{MapVersion: 5, Groups: []GroupStatus{
		{Group: 1, State: "active", Weight: 1, Leader: "a:1", Term: 2, MapVersion: 5, Totals: GroupTotals{Committed: 7},
			Replicas: []ReplicaStatus{{ID: 1, Addr: "a:1", Role: "leader", Term: 2, MapVersion: 5}, {ID: 2, Addr: "a:2", Role: "follower", Term: 2, MapVersion: 4}}},
		{Group: 2, State: "active", Weight: 1, Leader: "b:1", Totals: GroupTotals{Committed: 3},
			Replicas: []ReplicaStatus{{ID: 1, Addr: "b:1"}}},
	}, Total: GroupTotals{Committed: 10}}
	var out bytes.Buffer
	if err := writeClusterStatus(&out, cs); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`(?m)^\s*1\s+active\s+1\s+0\s+7\s.*\s2\s+5\s+a:1\s*$`, `(?m)^\s*2\s+active\s+1\s+0\s+3\s.*\s-\s+-\s+b:1\s*$`,
		`(?m)^group 1 replica 2 \(a:2\) uses cluster map version 4; this file is version 5$`} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("the table does not match %s:\n%s", re, out.String())
		}
	}
	if strings.Contains(out.String(), "replica 1 (a:1) uses") {
		t.Errorf("a replica on the file's version is named:\n%s", out.String())
	}
}
