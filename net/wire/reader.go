package wire

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// minRead is the least free space a Reader keeps at the end of its buffer
// before reading (or half the buffer, if that is smaller), so that it never
// issues many tiny reads.
const minRead = 4 << 10

// Buffer sizes: a Reader reads into a small buffer of its own until its
// traffic asks for more, then into a large one (MaxFrameSize) taken from a
// pool shared by every Reader, which it gives back once its traffic is
// small again.
const (
	// DefaultReadBuffer is a new Reader's small buffer unless told
	// otherwise: enough for any frame but a large Begin or admin reply,
	// and small enough that ten thousand idle connections hold 40 MiB,
	// not 640.
	DefaultReadBuffer = 4 << 10
	// minReadBuffer is the least a small buffer holds: a header and then
	// some.
	minReadBuffer = 256
	// shrinkAfter is how many reads in a row must each fill less than an
	// eighth of the large buffer before it goes back to the pool: a
	// connection that was busy and has gone quiet gives its memory back,
	// one that is busy keeps it. Between two bursts a connection may do
	// many small reads, and each switch copies what is buffered, hence
	// the long run.
	shrinkAfter = 1024
)

// largeBuffers holds the large buffers Readers are not using: a busy
// connection that goes quiet and busy again does not allocate each time.
var largeBuffers = sync.Pool{New: func() any { return new([MaxFrameSize]byte) }}

// Reader reads frames from a stream into a buffer that it reuses. Frames
// that arrive whole are returned without copying; a frame split across
// reads is completed in place, after moving its first part to the front of
// the buffer if the rest would not fit (nats-server copies a split frame
// into scratch space in the same way).
//
// The buffer starts small (so an idle connection costs little). A frame
// larger than it, or a read that fills half of it or more (more is
// waiting: a busy connection), moves the Reader to a MaxFrameSize buffer
// from a shared pool; shrinkAfter reads in a row that each used under an
// eighth of it move the Reader back to its small buffer and return the
// large one to the pool (nats-server sizes its read buffers by the same
// signals).
//
// A Reader is not safe for concurrent use.
type Reader struct {
	r io.Reader
	// buf[start:end] holds bytes read but not yet returned as frames: buf
	// is small, or large while the Reader holds a pooled buffer.
	buf        []byte
	start, end int
	small      []byte              // the Reader's own buffer
	large      *[MaxFrameSize]byte // the pooled buffer buf is, or nil
	quiet      int                 // reads in a row that used under an eighth of large
	// rerr is the error the underlying reader returned, reported once the
	// buffered bytes are used up.
	rerr error
	// err is sticky: after a framing error the stream cannot be resynchronised.
	err error
}

// NewReader returns a Reader of r whose small buffer is size bytes
// (DefaultReadBuffer if size is 0 or less; at least 256, at most
// MaxFrameSize); it uses a MaxFrameSize buffer while its traffic asks.
func NewReader(r io.Reader, size int) *Reader {
	if size <= 0 {
		size = DefaultReadBuffer
	}
	size = min(max(size, minReadBuffer), MaxFrameSize)
	small := make([]byte, size)
	return &Reader{r: r, buf: small, small: small}
}

// Reset makes r read frames from src, dropping anything buffered and any
// error, and keeping its buffer.
func (r *Reader) Reset(src io.Reader) {
	*r = Reader{r: src, buf: r.buf, small: r.small, large: r.large}
}

// BufferSize returns the size of the buffer the Reader is reading into now.
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
	// The usual case on a busy connection: a whole frame with a good
	// header is buffered. Taken here with one table lookup instead of
	// ParseFrame's checks and results; anything else — a frame not all
	// in, or a header ParseFrame refuses — takes the general path below,
	// which gives the same frame or the error.
	if b := r.buf[r.start:r.end]; len(b) >= HeaderSize {
		n := int(binary.BigEndian.Uint32(b)) + 4
		t, fl, id := Type(b[5]), Flags(binary.BigEndian.Uint16(b[6:])), binary.BigEndian.Uint64(b[8:])
		// n <= len(b) bounds n by MaxFrameSize, the buffer's largest size.
		if n >= HeaderSize && n <= len(b) && b[4] == Version && headerOK(t, fl, id) {
			f := Frame{Type: t, Flags: fl, ReqID: id, Payload: b[HeaderSize:n:n]}
			r.start += n
			if r.start == r.end {
				r.start, r.end = 0, 0
			}
			return f, nil
		}
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
// front, and a useful read: it takes the large buffer if the frame cannot
// fit in the small one at all, and moves the partial frame to the front if
// it would not fit in what is left after it, or too little is left for a
// useful read.
func (r *Reader) makeRoom() {
	need := r.need()
	if need > len(r.buf) {
		r.grow()
		return
	}
	minFree := min(minRead, len(r.buf)/2)
	if free := len(r.buf) - r.end; r.start > 0 && (free < minFree || len(r.buf)-r.start < need) {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
}

// sized adapts the buffer to the read that just put n bytes in free space:
// a read that filled half the small buffer or more means more is waiting,
// so the Reader takes the large one; a long run of small reads gives it
// back.
func (r *Reader) sized(n, free int) {
	switch {
	case r.large == nil:
		if n == free && free >= len(r.buf)/2 {
			r.grow()
		}
	case n < MaxFrameSize/8:
		if r.quiet++; r.quiet >= shrinkAfter && r.end-r.start <= len(r.small)/2 {
			r.quiet = 0
			r.end = copy(r.small, r.buf[r.start:r.end])
			r.start = 0
			r.buf = r.small
			largeBuffers.Put(r.large)
			r.large = nil
		}
	default:
		r.quiet = 0
	}
}

// grow moves the unread bytes into a large buffer from the pool.
func (r *Reader) grow() {
	if r.large != nil {
		return // already MaxFrameSize: ParseFrame bounds every frame by it
	}
	r.large = largeBuffers.Get().(*[MaxFrameSize]byte)
	r.end = copy(r.large[:], r.buf[r.start:r.end])
	r.start = 0
	r.buf = r.large[:]
	r.quiet = 0
}

// Release gives the Reader's large buffer back to the pool, if it holds
// one, and stops it: a connection that is done calls it so that its
// buffer serves the next busy one. Next then returns ErrReleased.
func (r *Reader) Release() {
	if r.large != nil {
		largeBuffers.Put(r.large)
	}
	*r = Reader{err: ErrReleased}
}

// ErrReleased is what Next returns after Release.
var ErrReleased = errors.New("wire: reader released")

// need returns the size of the frame at the front of the buffer if its
// length prefix is in, else a header's size.
func (r *Reader) need() int {
	if n, err := FrameLen(r.buf[r.start:r.end]); err == nil {
		return n
	}
	return HeaderSize
}
