package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// LogSpace is what one write-ahead log in a data directory needs on disk to
// start: Segments files of SegmentBytes bytes each, written out in full
// before the first record.
type LogSpace struct {
	Name         string // for the message: "log", "ledger"
	Dir          string
	Segments     int
	SegmentBytes int64
}

// FreeBytes returns the bytes an unprivileged process may still write to
// the file system holding dir (statfs: available blocks × block size).
func FreeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// CheckSpace returns an error unless the file system holding dataDir has
// room for logs, each less the segment files already in its directory
// (which the log reuses: after the first start the check asks for little or
// nothing, and a later full disk is reported by the log itself, naming the
// segment it was preparing). The message names the directory, the bytes
// needed and free, and the flag that lowers the need. free is FreeBytes
// outside tests.
//
// Without it, a directory too small for its segments failed only once the
// server had said it was serving, when the preparer hit ENOSPC.
func CheckSpace(dataDir string, logs []LogSpace, free func(dir string) (int64, error)) error {
	var need, have int64
	var parts []string
	for _, l := range logs {
		need += int64(l.Segments) * l.SegmentBytes
		n, err := segmentBytes(l.Dir)
		if err != nil {
			return fmt.Errorf("data directory %s: %w", dataDir, err)
		}
		have += n
		parts = append(parts, fmt.Sprintf("%s: %d segments of %s", l.Name, l.Segments, size(l.SegmentBytes)))
	}
	need = max(0, need-have)
	avail, err := free(dataDir)
	if err != nil {
		return fmt.Errorf("data directory %s: checking free space: %w", dataDir, err)
	}
	if avail >= need {
		return nil
	}
	return fmt.Errorf("data directory %s: %s free, but the logs need %s to start (%s; %s of segment files already there): "+
		"free some space, or lower the segment size (--segment-size, Config.SegmentBytes)",
		dataDir, size(avail), size(need), strings.Join(parts, ", "), size(have))
}

// segmentBytes sums the sizes of the segment files (*.wal, and *.wal.tmp,
// which Open deletes) in dir; a missing dir holds none.
func segmentBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".wal") && !strings.HasSuffix(e.Name(), ".wal.tmp") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return 0, err
		}
		n += info.Size()
	}
	return n, nil
}

// size formats a byte count exactly and in MiB.
func size(n int64) string { return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20)) }
