package wire

import (
	"errors"
	"io"
)

// minRead is the least free space a Reader keeps at the end of its buffer
// before reading (or half the buffer, if that is smaller), so that it never
// issues many tiny reads.
const minRead = 4 << 10

// Buffer sizes: a Reader starts small and grows only as its traffic asks.
const (
	// DefaultReadBuffer is a new Reader's buffer unless told otherwise:
	// enough for any frame but a large Begin or admin reply, and small
	// enough that ten thousand idle connections hold 40 MiB, not 640.
	DefaultReadBuffer = 4 << 10
	// minReadBuffer is the least a Reader starts with: a header and then
	// some.
	minReadBuffer = 256
	// shrinkAfter is how many reads in a row must each fill less than a
	// quarter of a grown buffer before it is halved: a connection that
	// was busy and has gone quiet gives its memory back, one that is
	// busy keeps it. Lazy, so that bursty traffic (a run of small reads
	// between bursts that fill the buffer) does not reallocate it over
	// and over: at 16 the pipelined benchmark without coalescing
	// allocated 20–50 bytes per message doing so.
	shrinkAfter = 256
)

// Reader reads frames from a stream into one buffer that it reuses. Frames
// that arrive whole are returned without copying; a frame split across
// reads is completed in place, after moving its first part to the front of
// the buffer if the rest would not fit (nats-server copies a split frame
// into scratch space in the same way).
//
// The buffer starts small (so an idle connection costs little), doubles
// when a frame does not fit or a read fills it (up to MaxFrameSize), and
// is halved again, back towards its first size, after shrinkAfter reads
// in a row that used less than a quarter of it (nats-server sizes its read
// buffers the same way).
//
// A Reader is not safe for concurrent use.
type Reader struct {
	r io.Reader
	// buf[start:end] holds bytes read but not yet returned as frames.
	buf        []byte
	start, end int
	// rerr is the error the underlying reader returned, reported once the
	// buffered bytes are used up.
	rerr error
	// err is sticky: after a framing error the stream cannot be resynchronised.
	err error
	// initial is the size the buffer started with, and shrinks back to;
	// small counts the reads in a row that used under a quarter of it.
	initial, small int
}

// NewReader returns a Reader of r whose buffer starts at size bytes
// (DefaultReadBuffer if size is 0 or less; at least 256, at most
// MaxFrameSize) and grows on demand up to MaxFrameSize.
func NewReader(r io.Reader, size int) *Reader {
	if size <= 0 {
		size = DefaultReadBuffer
	}
	size = min(max(size, minReadBuffer), MaxFrameSize)
	return &Reader{r: r, buf: make([]byte, size), initial: size}
}

// Reset makes r read frames from src, dropping anything buffered and any
// error, and keeping its buffer.
func (r *Reader) Reset(src io.Reader) {
	*r = Reader{r: src, buf: r.buf, initial: r.initial}
}

// BufferSize returns the size of the Reader's buffer now.
func (r *Reader) BufferSize() int { return len(r.buf) }

// Buffered returns the number of bytes read from the stream but not yet
// returned as frames.
func (r *Reader) Buffered() int { return r.end - r.start }

// Next returns the next frame. The frame's Payload references the Reader's
// buffer and is valid only until the next call to Next.
//
// Next checks each header as soon as its bytes are in (see ParseFrame), so
// an oversized, wrong-version or garbage frame is refused without waiting
// for, or storing, its payload. Errors are sticky: once Next returns an
// error it returns that error forever. At a clean end of stream (between
// frames) the error is io.EOF; in the middle of a frame it is
// io.ErrUnexpectedEOF.
func (r *Reader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	empty := 0
	for {
		f, n, err := ParseFrame(r.buf[r.start:r.end])
		if err == nil {
			r.start += n
			if r.start == r.end {
				r.start, r.end = 0, 0
			}
			return f, nil
		}
		if err != io.ErrUnexpectedEOF {
			r.err = err
			return Frame{}, err
		}
		if r.rerr != nil {
			r.err = r.rerr
			if r.err == io.EOF && r.end > r.start {
				r.err = io.ErrUnexpectedEOF
			}
			return Frame{}, r.err
		}
		// Need more bytes. Make room first: ParseFrame has bounded the
		// frame by MaxFrameSize, the most the buffer grows to.
		r.makeRoom()
		free := len(r.buf) - r.end
		n, rerr := r.r.Read(r.buf[r.end:])
		if n < 0 || n > free {
			r.err = errors.New("wire: reader returned an invalid count")
			return Frame{}, r.err
		}
		r.end += n
		r.rerr = rerr
		r.sized(n, free)
		if n == 0 && rerr == nil {
			if empty++; empty > 100 {
				r.err = io.ErrNoProgress
				return Frame{}, r.err
			}
		}
	}
}

// makeRoom makes the buffer able to take the rest of the frame at its
// front, and a useful read: it grows the buffer if the frame cannot fit in
// it at all, and moves the partial frame to the front if it would not fit
// in what is left after it, or too little is left for a useful read.
func (r *Reader) makeRoom() {
	need := r.need()
	if need > len(r.buf) {
		r.resize(min(max(need, 2*len(r.buf)), MaxFrameSize))
		return
	}
	minFree := min(minRead, len(r.buf)/2)
	if free := len(r.buf) - r.end; r.start > 0 && (free < minFree || len(r.buf)-r.start < need) {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
}

// sized adapts the buffer to the read that just put n bytes in free space:
// a read that filled it means more is waiting (a busy connection), so the
// buffer doubles; a run of small reads halves a grown buffer. Either
// happens only between frames, or with the partial frame moved along.
func (r *Reader) sized(n, free int) {
	switch {
	case n == free && len(r.buf) < MaxFrameSize:
		r.small = 0
		r.resize(min(2*len(r.buf), MaxFrameSize))
	case len(r.buf) > r.initial && n < len(r.buf)/4:
		if r.small++; r.small >= shrinkAfter {
			r.small = 0
			if size := max(len(r.buf)/2, r.initial); r.end-r.start <= size/2 {
				r.resize(size)
			}
		}
	default:
		r.small = 0
	}
}

// resize replaces the buffer with one of size bytes holding the unread
// bytes at its front; size is at least their number.
func (r *Reader) resize(size int) {
	buf := make([]byte, size)
	r.end = copy(buf, r.buf[r.start:r.end])
	r.start = 0
	r.buf = buf
}

// need returns the size of the frame at the front of the buffer if its
// length prefix is in, else a header's size.
func (r *Reader) need() int {
	if n, err := FrameLen(r.buf[r.start:r.end]); err == nil {
		return n
	}
	return HeaderSize
}
