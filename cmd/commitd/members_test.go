package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
)

// TestReplaceDeadReplicaOfProcesses replaces a dead machine of a
// 3-process coordinator group under a steady load, the way docs/ha.md
// tells an operator to: kill -9 a replica (the leader), `admin replicas
// remove` it, start a fresh replica with an empty directory and --join,
// `admin replicas add` it; then kill another original replica — the
// group of the survivor and the newcomer must keep committing, which it
// can only do if the newcomer is a voter that caught up. The dead
// replica's directory, restarted, refuses to serve, and cannot --join.
// At the end nothing is left prepared and no money was made or lost.
func TestReplaceDeadReplicaOfProcesses(t *testing.T) {
	dir := t.TempDir()
	rc := [4]string{freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)}
	p1, p2 := freeAddr(t), freeAddr(t)
	// Participants and clients are given every address a replica may have
	// (participants do not learn the group's membership: docs/ha.md).
	list := strings.Join(rc[:], ",")
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", rc[0], rc[1], rc[2])
	const accounts = 100
	procs := map[string]*exec.Cmd{}
	var procsMu sync.Mutex
	start := func(name string, args ...string) {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procsMu.Lock()
		procs[name] = cmd
		procsMu.Unlock()
	}
	t.Cleanup(func() {
		procsMu.Lock()
		defer procsMu.Unlock()
		for _, cmd := range procs {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	})
	kill := func(id int) {
		procsMu.Lock()
		cmd := procs[fmt.Sprint("c", id)]
		delete(procs, fmt.Sprint("c", id))
		procsMu.Unlock()
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
	}
	replicaArgs := func(id int, peers string) []string {
		return []string{"coordinator", "--id", fmt.Sprint(id), "--peers", peers, "--listen", rc[id-1],
			"--data", filepath.Join(dir, fmt.Sprint("c", id)), "--participant", "p1=" + p1 + ",p2=" + p2,
			"--segment-size", "8MiB", "--shards", "1"}
	}
	start("p1", "participant", "--name", "p1", "--listen", p1, "--data", filepath.Join(dir, "p1"), "--coordinator", list,
		"--accounts", fmt.Sprint(accounts), "--inquire-after", "200ms", "--inquire-max", "1s", "--segment-size", "8MiB")
	start("p2", "participant", "--name", "p2", "--listen", p2, "--data", filepath.Join(dir, "p2"), "--coordinator", list,
		"--accounts", fmt.Sprint(accounts), "--inquire-after", "200ms", "--inquire-max", "1s", "--segment-size", "8MiB")
	for id := 1; id <= 3; id++ {
		start(fmt.Sprint("c", id), replicaArgs(id, peers)...)
	}
	for _, a := range append(rc[:3], p1, p2) {
		waitListening(t, a)
	}
	waitCommitting(t, list, "p1", "p2")

	cl, err := client.Dial(list, client.Options{DialTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var committed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, b := rng.IntN(accounts), rng.IntN(accounts)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				res, _ := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
					{Participant: "p1", Work: bank.AppendWork(nil, uint32(a), -1)},
					{Participant: "p2", Work: bank.AppendWork(nil, uint32(b), 1)},
				})
				cancel()
				if res.Outcome == client.Committed {
					committed.Add(1)
				} else if res.Outcome != client.Aborted {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	progress := func(what string) {
		t.Helper()
		want := committed.Load() + 50
		deadline := time.Now().Add(20 * time.Second)
		for committed.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no commits within 20 s (%d so far)", what, committed.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	members := func() (m struct {
		Leader   uint64
		Replicas []struct {
			ID   uint64
			Role string
		}
	}) {
		r := commitd(t, 30*time.Second, "admin", "replicas", "--coordinator", list, "--timeout", "20s")
		if r.code != 0 {
			t.Fatalf("admin replicas: exit %d: %s", r.code, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
			t.Fatalf("admin replicas printed %q: %v", r.stdout, err)
		}
		return m
	}
	progress("before the fault")

	// The leader's machine dies.
	dead := int(members().Leader)
	if dead == 0 {
		dead = 1
	}
	kill(dead)
	progress(fmt.Sprintf("after kill -9 of replica %d", dead))
	r := commitd(t, 60*time.Second, "admin", "replicas", "remove", fmt.Sprint(dead), "--coordinator", list)
	if r.code != 0 {
		t.Fatalf("admin replicas remove %d: exit %d: %s", dead, r.code, r.stderr)
	}
	t.Logf("removed %d: %s", dead, strings.TrimSpace(r.stdout))

	// A fresh machine joins: an empty directory, --join, then add it.
	start("c4", append(replicaArgs(4, peers+",4="+rc[3]), "--join")...)
	waitListening(t, rc[3])
	r = commitd(t, 90*time.Second, "admin", "replicas", "add", "4="+rc[3], "--coordinator", list)
	if r.code != 0 {
		t.Fatalf("admin replicas add 4: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("added 4: %s", strings.TrimSpace(r.stdout))
	m := members()
	if len(m.Replicas) != 3 {
		t.Fatalf("members after the replacement: %+v", m)
	}
	for _, rep := range m.Replicas {
		if rep.Role != "voter" || rep.ID == uint64(dead) {
			t.Fatalf("members after the replacement: %+v", m)
		}
	}
	progress("after adding replica 4")

	// Another original machine dies: the survivor and the newcomer are a
	// quorum.
	other := 1
	for other == dead {
		other++
	}
	kill(other)
	progress(fmt.Sprintf("after kill -9 of replica %d as well", other))

	// The dead replica's directory: restarted as it was, it learns from
	// the group that it was removed and stops; with --join it is refused.
	r = commitd(t, 30*time.Second, replicaArgs(dead, peers)...)
	oneLineError(t, r, "was removed from the group")
	r = commitd(t, 30*time.Second, append(replicaArgs(dead, peers), "--join")...)
	oneLineError(t, r, "--join, but it holds replica")

	// Bad changes are refused by the leader, with the reason.
	r = commitd(t, 30*time.Second, "admin", "replicas", "remove", "9", "--coordinator", list)
	oneLineError(t, r, "replica 9 is not a member of the group")
	r = commitd(t, 30*time.Second, "admin", "replicas", "add", "5="+rc[3], "--coordinator", list)
	oneLineError(t, r, "is replica 4's")
	r = commitd(t, 30*time.Second, "admin", "replicas", "add", "--coordinator", list)
	if r.code != 2 || !strings.Contains(r.stderr, "name the replica") {
		t.Fatalf("admin replicas add without a replica: exit %d, %q", r.code, r.stderr)
	}
	progress("at the end")
	close(stop)
	wg.Wait()

	// Settle, then count the money.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		var sum int64
		for _, p := range []string{p1, p2} {
			var a struct {
				Total    int64
				Prepared int
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := client.Admin(ctx, p, "accounts", nil, &a)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			n += a.Prepared
			sum += a.Total
		}
		if n == 0 && sum == 2*accounts*1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %d prepared, total %d, want 0 and %d", n, sum, 2*accounts*1000)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d transfers committed", committed.Load())
}
