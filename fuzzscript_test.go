package commitd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// scripts/fuzz-one.sh repeats a fuzz run only when it ended in Go's
// shutdown race and nothing else, and fails on every real finding. A stub
// "go" plays the runs: it prints the next canned output and exits with its
// code.
func TestFuzzOneRepeatsOnlyTheShutdownRace(t *testing.T) {
	const race = "fuzz: elapsed: 5s, execs: 83132 (17692/sec), new interesting: 0 (total: 42)\n--- FAIL: FuzzX (5.14s)\n    context deadline exceeded\nFAIL\nexit status 1\n"
	const found = "--- FAIL: FuzzX (0.31s)\n    --- FAIL: FuzzX (0.00s)\n        x_test.go:12: decoded twice differently\n\n    Failing input written to testdata/fuzz/FuzzX/abc\nFAIL\n"
	const foundLate = "--- FAIL: FuzzX (5.02s)\n    context deadline exceeded\n    Failing input written to testdata/fuzz/FuzzX/abc\nFAIL\n"
	const ok = "fuzz: elapsed: 5s, execs: 90000\nPASS\nok  \tx\t5.1s\n"
	for _, c := range []struct {
		name  string
		runs  []string // outputs; a run's exit code is 0 for ok, 1 otherwise
		want  int      // the script's exit code
		tries int      // runs made
	}{
		{"passes", []string{ok}, 0, 1},
		{"race, then passes", []string{race, ok}, 0, 2},
		{"race twice", []string{race, race}, 1, 2},
		{"a failing input", []string{found}, 1, 1},
		{"a failing input at the deadline", []string{foundLate}, 1, 1},
		{"race, then a failing input", []string{race, found}, 1, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, out := range c.runs {
				code := "1"
				if out == ok {
					code = "0"
				}
				if err := os.WriteFile(filepath.Join(dir, "out"+string(rune('0'+i))), []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "code"+string(rune('0'+i))), []byte(code), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			stub := filepath.Join(dir, "go")
			script := "#!/bin/sh\nd=" + dir + "\nn=$(cat $d/n 2>/dev/null || echo 0)\necho $((n+1)) > $d/n\ncat $d/out$n\nexit $(cat $d/code$n)\n"
			if err := os.WriteFile(stub, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("scripts/fuzz-one.sh", "example.com/x", "FuzzX", "5s", "0")
			cmd.Env = append(os.Environ(), "GO="+stub)
			out, _ := cmd.CombinedOutput()
			if got := cmd.ProcessState.ExitCode(); got != c.want {
				t.Errorf("exit %d, want %d; output:\n%s", got, c.want, out)
			}
			n, _ := os.ReadFile(filepath.Join(dir, "n"))
			if got := strings.TrimSpace(string(n)); got != string(rune('0'+c.tries)) {
				t.Errorf("%s runs, want %d; output:\n%s", got, c.tries, out)
			}
		})
	}
}
