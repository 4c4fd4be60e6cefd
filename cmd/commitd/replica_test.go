package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReplicaBadInput: a replica refuses to start, in one line, when its
// --id or --peers are wrong or its data directory belongs to another
// replica or another group.
func TestReplicaBadInput(t *testing.T) {
	a, b, c := freeAddr(t), freeAddr(t), freeAddr(t)
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", a, b, c)
	base := []string{"coordinator", "--participant", "p1=127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data", t.TempDir(), "--peers", peers}, "--peers needs --id"},
		{[]string{"--data", t.TempDir(), "--id", "2"}, "--id 2 without --peers"},
		{[]string{"--data", t.TempDir(), "--id", "4", "--peers", peers}, "--id 4 is not in --peers"},
		{[]string{"--data", t.TempDir(), "--id", "1", "--peers", "1=" + a + ",1=" + b}, "replica 1 named twice"},
		{[]string{"--data", t.TempDir(), "--id", "1", "--peers", "1=" + a + ",2=" + a}, "have the same address"},
		{[]string{"--data", t.TempDir(), "--id", "1", "--peers", "0=" + a}, "want ID=ADDR with ID from 1"},
		{[]string{"--data", t.TempDir(), "--id", "1", "--peers", peers, "--listen", b}, "is not replica 1's address"},
	} {
		r := commitd(t, 20*time.Second, append(base, tc.args...)...)
		oneLineError(t, r, tc.want)
	}

	// A data directory made by replica 1 of this group is refused to
	// replica 2, and to replica 1 of another group.
	dir := t.TempDir()
	cmd := exec.Command(binary, append(base, "--data", dir, "--id", "1", "--peers", peers, "--log-level", "info")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Its identity is synced before it says it serves: wait for that line
	// (a fixed sleep was too short on a loaded machine, and replica 2 then
	// found an empty directory and started).
	serving := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			if !found && strings.Contains(sc.Text(), "serving") {
				found = true
				serving <- true
			}
		}
		if !found {
			serving <- false
		}
	}()
	select {
	case ok := <-serving:
		if !ok {
			t.Fatal("replica 1 exited without serving")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("replica 1 did not say it serves within 20s")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	r := commitd(t, 20*time.Second, append(base, "--data", dir, "--id", "2", "--peers", peers)...)
	oneLineError(t, r, "it holds replica 1 of group")
	// Other --peers: the configuration in the log wins, but a member that
	// --peers places elsewhere is a mistake that matters.
	other := fmt.Sprintf("1=%s,2=%s,3=%s", a, b, freeAddr(t))
	r = commitd(t, 20*time.Second, append(base, "--data", dir, "--id", "1", "--peers", other)...)
	oneLineError(t, r, "but the group's configuration (in the log, which wins) has it at "+c)
	// A directory that bootstrapped a group cannot join one.
	r = commitd(t, 20*time.Second, append(base, "--data", dir, "--id", "1", "--peers", peers, "--join")...)
	oneLineError(t, r, "--join, but it holds replica 1 of group")
	r = commitd(t, 20*time.Second, append(base, "--data", t.TempDir(), "--join")...)
	oneLineError(t, r, "--join without --peers")
}
