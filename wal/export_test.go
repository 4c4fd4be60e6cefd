package wal

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

// FrameSize exposes frameSize.
var FrameSize = frameSize

// Waiters returns how many waiters are registered.
func (l *Log) Waiters() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.waiters)
}
