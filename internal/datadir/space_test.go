package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckSpace stands in a small disk (an injected statfs) under a
// participant's two logs: the check fails naming the directory, the bytes
// needed and free and the flag, and counts segment files already on disk
// as room the logs reuse.
func TestCheckSpace(t *testing.T) {
	dir := t.TempDir()
	logs := []LogSpace{
		{Name: "log", Dir: filepath.Join(dir, "wal"), Segments: 4, SegmentBytes: 64 << 20},
		{Name: "ledger", Dir: filepath.Join(dir, "ledger"), Segments: 4, SegmentBytes: 16 << 20},
	}
	const need = 4*64<<20 + 4*16<<20
	free := func(n int64) func(string) (int64, error) {
		return func(d string) (int64, error) {
			if d != dir {
				t.Errorf("statfs of %s, want %s", d, dir)
			}
			return n, nil
		}
	}
	err := CheckSpace(dir, logs, free(8<<20))
	if err == nil {
		t.Fatal("an 8 MiB disk passed the check")
	}
	for _, want := range []string{dir, "8388608 bytes (8.0 MiB) free", "need 335544320 bytes (320.0 MiB)", "--segment-size", "ledger: 4 segments of 16777216 bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %q", err, want)
		}
	}
	if err := CheckSpace(dir, logs, free(need)); err != nil {
		t.Fatalf("exactly enough space: %v", err)
	}
	// A restart: segment files already there are reused.
	if err := os.MkdirAll(logs[0].Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"0000000000000001.wal", "0000000000000002.wal.tmp", "LOCK"} {
		if err := os.WriteFile(filepath.Join(logs[0].Dir, name), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckSpace(dir, logs, free(need-2<<20)); err != nil {
		t.Fatalf("2 MiB of segments on disk, 2 MiB short: %v", err)
	}
	if err := CheckSpace(dir, logs, free(need-2<<20-1)); err == nil {
		t.Fatal("one byte short passed")
	}
}

// TestFreeBytes: the real statfs answers for a real directory.
func TestFreeBytes(t *testing.T) {
	n, err := FreeBytes(t.TempDir())
	if err != nil || n <= 0 {
		t.Fatalf("FreeBytes: %d, %v", n, err)
	}
}
