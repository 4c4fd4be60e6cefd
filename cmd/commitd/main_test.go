package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/wal"
	"github.com/google/uuid"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var binary string

// TestMain builds the real binary once: these tests run it as an operator
// would and read its exit status and standard error.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "commitd-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "commitd")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building commitd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func commitd(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("commitd %v: %v", args, err)
	}
	return r
}

// oneLineError checks the operator contract: a non-zero exit, and one
// line on standard error saying what is wrong — never a stack trace.
func oneLineError(t *testing.T, r result, want string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("exit status 0; stderr %q", r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("stack trace on stderr:\n%s", r.stderr)
	}
	if !strings.Contains(last, want) {
		t.Fatalf("last stderr line %q does not mention %q (all: %q)", last, want, r.stderr)
	}
}

func TestBadInvocations(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"coordinator", "--shards", "many"}, "invalid value"},
		{[]string{"coordinator", "--data", t.TempDir()}, "at least one participant"},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1"}, "NAME=ADDR"},
		{[]string{"participant", "--coordinator", "127.0.0.1:1"}, "--data is required"},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--accounts", "0"}, "--accounts"},
		{[]string{"admin", "status", "--coordinator", "127.0.0.1:1"}, "cannot reach"},
		{[]string{"admin", "payroll"}, "unknown report"},
		{[]string{"bench", "--coordinator", "127.0.0.1:1"}, "required"},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1=127.0.0.1:1", "--tls-cert", "x.pem"}, "needs all of"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			oneLineError(t, commitd(t, 20*time.Second, tc.args...), tc.want)
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestLockedDataDirectory starts a participant and then a second one on the
// same data directory: the second must refuse, in one line.
func TestLockedDataDirectory(t *testing.T) {
	dir := t.TempDir()
	first := exec.Command(binary, "participant", "--name", "p1", "--listen", freeAddr(t), "--data", dir,
		"--coordinator", "127.0.0.1:1", "--log-level", "error")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		first.Process.Kill()
		first.Wait()
	}()
	// Wait until the first holds the lock (its log directory appears).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ledger")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first participant did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := commitd(t, 20*time.Second, "participant", "--name", "p1", "--listen", freeAddr(t), "--data", dir, "--coordinator", "127.0.0.1:1")
	oneLineError(t, r, "in use by another process")
}

// TestCorruptDataDirectory damages a record in the middle of a
// participant's log: the next start must refuse, in one line naming the
// corruption, rather than start from a wrong state.
func TestCorruptDataDirectory(t *testing.T) {
	dir := t.TempDir()
	walDir := filepath.Join(dir, "wal")
	log, err := wal.Open(walDir, wal.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var rec []byte
	for i := range 10 {
		r := engine.Record{Type: engine.RecAborted, Txn: uuid.New()}
		if rec, err = r.AppendBinary(rec[:0]); err != nil {
			t.Fatal(err)
		}
		if _, err := log.AppendSync(rec); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the third record's data. The layout (docs/wal-format.md):
	// a 32-byte segment header, then frames of a 16-byte header and the data
	// padded to 8 bytes; every record here has the same length.
	frame := (16 + len(rec) + 7) &^ 7
	pos := 32 + 2*frame + 16
	segs, _ := filepath.Glob(filepath.Join(walDir, "*"))
	damaged := false
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil || len(b) < pos+1 || string(b[:8]) != "commitdW" {
			continue // a segment prepared ahead, not yet used
		}
		b[pos] ^= 0xFF
		if err := os.WriteFile(seg, b, 0o644); err != nil {
			t.Fatal(err)
		}
		damaged = true
		break
	}
	if !damaged {
		t.Fatalf("found no used segment among %v", segs)
	}
	r := commitd(t, 20*time.Second, "participant", "--name", "p1", "--listen", freeAddr(t), "--data", dir, "--coordinator", "127.0.0.1:1")
	oneLineError(t, r, "corrupt")
}
