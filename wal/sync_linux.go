package wal

import (
	"io/fs"
	"syscall"
)

// Sync is fdatasync(2), not fsync(2): segment files are written in place
// at their full, preallocated size, so the data is all that must reach the
// disk. fsync would also write the inode whenever a write moved its mtime
// — a journal commit, and on this kind of disk a second cache flush,
// for a timestamp nobody needs. Where the size did change (a new file
// being zero-filled), fdatasync writes the size too, as recovery needs.
func (f osFile) Sync() error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &fs.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
