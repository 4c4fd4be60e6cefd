package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdminClusterReloadCommand: `commitd admin cluster reload` makes a
// running participant and coordinator (real processes) re-read their
// --cluster files, one JSON line each with the version now in use; a
// map that may not follow is refused on that process's line, naming why,
// with exit status 1, and the process keeps its map; a process started
// without --cluster says it has no map to reload.
func TestAdminClusterReloadCommand(t *testing.T) {
	dir := t.TempDir()
	c1, p1, lone := freeAddr(t), freeAddr(t), freeAddr(t)
	file := filepath.Join(dir, "cluster.map")
	writeMap := func(version int, group1 string) {
		text := fmt.Sprintf("version %d\ngroup 1 replicas 1=%s %s\ngroup 2 replicas 1=127.0.0.1:1 weight 1\nparticipant p1=%s\n", version, c1, group1, p1)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeMap(1, "weight 1")
	start := func(args ...string) {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		})
	}
	start("participant", "--name", "p1", "--listen", p1, "--data", filepath.Join(dir, "p1"), "--cluster", file, "--accounts", "10")
	start("coordinator", "--group", "1", "--cluster", file, "--listen", c1, "--data", filepath.Join(dir, "c1"), "--participant", "p1="+p1)
	start("coordinator", "--listen", lone, "--data", filepath.Join(dir, "lone"), "--participant", "p1=127.0.0.1:1")
	for _, a := range []string{p1, c1, lone} {
		waitListening(t, a)
	}

	lines := func(r result) []reloadLine {
		t.Helper()
		var out []reloadLine
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var x reloadLine
			if err := json.Unmarshal([]byte(l), &x); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			out = append(out, x)
		}
		return out
	}
	writeMap(2, "draining")
	for _, flag := range []string{"--participant", "--coordinator"} {
		addr := map[string]string{"--participant": p1, "--coordinator": c1}[flag]
		r := commitd(t, 20*time.Second, "admin", "cluster", "reload", flag, addr)
		if l := lines(r); r.code != 0 || len(l) != 1 || l[0].MapVersion != 2 || l[0].File != file || l[0].Error != "" {
			t.Fatalf("%s: exit %d, %+v, stderr %q", flag, r.code, l, r.stderr)
		}
	}

	writeMap(3, "retired\ngroup 1 replicas 1=127.0.0.1:9") // a group listed twice
	r := commitd(t, 20*time.Second, "admin", "cluster", "reload", "--participant", p1)
	if l := lines(r); r.code != 1 || len(l) != 1 || !strings.Contains(l[0].Error, "cluster.map:3: group 1 again") || !strings.Contains(l[0].Error, "keeping version 2") {
		t.Fatalf("a bad map: exit %d, %+v", r.code, l)
	}
	oneLineError(t, r, "1 of 1 processes did not reload")

	r = commitd(t, 20*time.Second, "admin", "cluster", "reload", "--coordinator", c1+","+lone)
	l := lines(r)
	if r.code != 1 || len(l) != 2 || !strings.Contains(l[0].Error, "keeping version 2") || !strings.Contains(l[1].Error, "started without --cluster") {
		t.Fatalf("two coordinators, one without a map: exit %d, %+v", r.code, l)
	}
}
