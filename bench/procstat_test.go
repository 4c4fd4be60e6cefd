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
