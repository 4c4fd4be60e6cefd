package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Lock is an exclusive, advisory lock on a data directory, held by an open
// file. The kernel drops it when the process dies, so a crash never leaves
// a stale lock behind.
type Lock struct {
	f *os.File
}

// ErrLocked means another process holds the directory.
var ErrLocked = errors.New("data directory is in use by another process")

// Acquire creates dir if needed and locks it.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
	}
	return &Lock{f: f}, nil
}

// Release unlocks the directory. A nil Lock is fine.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Close()
	l.f = nil
}
