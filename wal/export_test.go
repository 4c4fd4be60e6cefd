package wal

import (
	"bytes"
	"errors"
)

// Hooks for the external tests (package wal_test).

// DecodeFrame exposes the frame decoder to the fuzz target.
func DecodeFrame(b []byte, seq uint64, want LSN) (data []byte, size int, why string) {
	return decodeFrame(b, segmentSeed(seq), want)
}

// SegmentName exposes segment file naming.
var SegmentName = segmentName

// Layout constants for tests that build or damage segment files.
const (
	SegmentHeaderSize = segmentHeaderSize
	FrameHeaderSize   = frameHeaderSize
)

// SetYieldBeforeWrite turns the flusher's yield before its write and
// fdatasync on or off, and returns the previous setting.
func SetYieldBeforeWrite(on bool) (was bool) {
	was, yieldBeforeWrite = yieldBeforeWrite, on
	return was
}

// FrameSize exposes frameSize.
var FrameSize = frameSize

// Waiters returns how many waiters are registered.
func (l *Log) Waiters() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.waiters)
}

// ScanPastTail runs the search Open makes past the tail of a last segment
// whose bytes are data (segment seq, first LSN first, tail at offset tail)
// and returns whether it found a valid frame and how many bytes it
// checksummed on the way.
func ScanPastTail(data []byte, seq uint64, first LSN, tail int64) (found bool, checked int64, err error) {
	var r segmentReader
	r.reset(bytesFile{bytes.NewReader(data)}, int64(len(data)), seq)
	_, found, err = r.findFrame(tail+8, first, first)
	return found, r.checked, err
}

// bytesFile is a read-only File over a byte slice.
type bytesFile struct{ *bytes.Reader }

func (bytesFile) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read-only") }
func (f bytesFile) Size() (int64, error)             { return f.Reader.Size(), nil }
func (bytesFile) Sync() error                        { return nil }
func (bytesFile) Close() error                       { return nil }
