//go:build !linux

package wal

// Sync is fsync(2) (os.File.Sync) where fdatasync is not available.
func (f osFile) Sync() error { return f.File.Sync() }
