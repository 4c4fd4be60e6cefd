package bench

import (
	"os"
	"testing"
)

// ProcessCPUSeconds of this process grows with the work it does, and a
// process that does not exist reads 0.
func TestProcessCPUSeconds(t *testing.T) {
	before := ProcessCPUSeconds(os.Getpid())
	x := 0
	for i := 0; ProcessCPUSeconds(os.Getpid()) < before+0.02 && i < 1e9; i++ {
		x += i
	}
	if after := ProcessCPUSeconds(os.Getpid()); after < before+0.02 {
		t.Fatalf("CPU seconds %v then %v after a busy loop (%d)", before, after, x)
	}
	if got := ProcessCPUSeconds(1 << 30); got != 0 {
		t.Fatalf("a process that does not exist: %v, want 0", got)
	}
}

// ProcessIOCalls counts this process's own reads and writes: a thousand
// one-byte writes to a pipe and a thousand reads from it raise both by at
// least a thousand; a process that does not exist is not ok.
func TestProcessIOCalls(t *testing.T) {
	r0, w0, ok := ProcessIOCalls(os.Getpid())
	if !ok {
		t.Skip("no /proc/self/io on this system")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	var b [1]byte
	for range 1000 {
		if _, err := pw.Write(b[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := pr.Read(b[:]); err != nil {
			t.Fatal(err)
		}
	}
	r1, w1, ok := ProcessIOCalls(os.Getpid())
	if !ok || r1-r0 < 1000 || w1-w0 < 1000 {
		t.Fatalf("after 1000 reads and writes: reads %d→%d, writes %d→%d (ok %v)", r0, r1, w0, w1, ok)
	}
	if _, _, ok := ProcessIOCalls(1 << 30); ok {
		t.Fatal("a process that does not exist reads ok")
	}
}
