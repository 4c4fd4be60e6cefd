package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestParticipantChangesOnGroupOfProcesses adds a participant to a
// 3-process coordinator group with `admin participants add`, given every
// replica's address, commits through it, kill -9s the leader and commits
// through it at the new leader, restarts every replica with the
// --participant list it started with (the log wins: they still know the
// added one), then removes it; bad forms exit 2 and refusals 1, with the
// reason.
func TestParticipantChangesOnGroupOfProcesses(t *testing.T) {
	dir := t.TempDir()
	rc := [3]string{freeAddr(t), freeAddr(t), freeAddr(t)}
	p1, p2, p3 := freeAddr(t), freeAddr(t), freeAddr(t)
	list := strings.Join(rc[:], ",")
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", rc[0], rc[1], rc[2])
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
	stop := func(name string, sig os.Signal) {
		procsMu.Lock()
		cmd := procs[name]
		delete(procs, name)
		procsMu.Unlock()
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
	}
	t.Cleanup(func() {
		procsMu.Lock()
		defer procsMu.Unlock()
		for _, cmd := range procs {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	})
	replica := func(id int) {
		start(fmt.Sprint("c", id), "coordinator", "--id", fmt.Sprint(id), "--peers", peers, "--listen", rc[id-1],
			"--data", filepath.Join(dir, fmt.Sprint("c", id)), "--participant", "p1="+p1+",p2="+p2,
			"--segment-size", "8MiB", "--shards", "1")
	}
	for i, p := range []string{p1, p2, p3} {
		name := fmt.Sprint("p", i+1)
		start(name, "participant", "--name", name, "--listen", p, "--data", filepath.Join(dir, name), "--coordinator", list,
			"--accounts", "10", "--inquire-after", "200ms", "--inquire-max", "1s", "--segment-size", "8MiB")
	}
	for id := 1; id <= 3; id++ {
		replica(id)
	}
	for _, a := range append(rc[:], p1, p2, p3) {
		waitListening(t, a)
	}
	waitCommitting(t, list, "p1", "p2")

	// participants lists what replica addr serves with.
	participants := func(addr string) map[string]struct{ Addr string } {
		t.Helper()
		r := commitd(t, 30*time.Second, "admin", "status", "--coordinator", addr)
		if r.code != 0 {
			t.Fatalf("admin status at %s: exit %d: %s", addr, r.code, r.stderr)
		}
		var st struct {
			Participants map[string]struct{ Addr string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("admin status printed %q: %v", r.stdout, err)
		}
		return st.Participants
	}
	// everywhere waits until every replica of ids lists p3 at addr ("":
	// not at all).
	everywhere := func(addr string, ids ...int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for _, id := range ids {
			for participants(rc[id-1])["p3"].Addr != addr {
				if time.Now().After(deadline) {
					t.Fatalf("replica %d lists %v, want p3 at %q", id, participants(rc[id-1]), addr)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}

	r := commitd(t, 30*time.Second, "admin", "participants", "add", "p3", "--coordinator", list)
	if r.code != 2 || !strings.Contains(r.stderr, "want NAME=ADDR") {
		t.Fatalf("a malformed add: exit %d, %q", r.code, r.stderr)
	}
	r = commitd(t, 30*time.Second, "admin", "participants", "add", "p3="+p3, "--coordinator", list)
	if r.code != 0 || !strings.Contains(r.stdout, `"p3":"`+p3+`"`) {
		t.Fatalf("admin participants add: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	everywhere(p3, 1, 2, 3)
	waitCommitting(t, list, "p1", "p3")
	r = commitd(t, 30*time.Second, "admin", "participants", "add", "p3=127.0.0.1:9", "--coordinator", list)
	oneLineError(t, r, `participant "p3" is already known`)

	// The leader dies; the new one commits through p3.
	var m struct{ Leader int }
	r = commitd(t, 30*time.Second, "admin", "replicas", "--coordinator", list)
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m.Leader == 0 {
		t.Fatalf("admin replicas: %q %v", r.stdout, err)
	}
	stop(fmt.Sprint("c", m.Leader), syscall.SIGKILL)
	waitCommitting(t, list, "p1", "p3")

	// Every replica restarts with its original --participant list: the
	// log's table wins.
	for id := 1; id <= 3; id++ {
		if id != m.Leader {
			stop(fmt.Sprint("c", id), os.Interrupt)
		}
	}
	for id := 1; id <= 3; id++ {
		replica(id)
	}
	for _, a := range rc {
		waitListening(t, a)
	}
	everywhere(p3, 1, 2, 3)
	waitCommitting(t, list, "p1", "p2", "p3")

	// Removed (once the last commit through it has ended everywhere).
	deadline := time.Now().Add(20 * time.Second)
	for {
		r = commitd(t, 30*time.Second, "admin", "participants", "remove", "p3", "--coordinator", list)
		if r.code == 0 {
			break
		}
		if r.code != 1 || !strings.Contains(r.stderr, "in flight or in doubt") || time.Now().After(deadline) {
			t.Fatalf("admin participants remove p3: exit %d, %q", r.code, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(r.stdout, `"p3"`) {
		t.Fatalf("admin participants remove p3 answered %q", r.stdout)
	}
	everywhere("", 1, 2, 3)
	r = commitd(t, 30*time.Second, "admin", "participants", "remove", "p3", "--coordinator", list)
	oneLineError(t, r, `"p3" is not one of this coordinator's participants`)
	waitCommitting(t, list, "p1", "p2")
}
