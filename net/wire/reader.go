package wire

import (
	"errors"
	"io"
)

// minRead is the least free space a Reader keeps at the end of its buffer
// before reading, so that it never issues many tiny reads.
const minRead = 4 << 10

// Reader reads frames from a stream into one buffer that it allocates once
// and reuses. Frames that arrive whole are returned without copying; a frame
// split across reads is completed in place, after moving its first part to
// the front of the buffer if the rest would not fit (nats-server copies a
// split frame into scratch space in the same way).
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
}

// NewReader returns a Reader of r with a buffer of size bytes, raised to
// MaxFrameSize if smaller (a frame must fit whole).
func NewReader(r io.Reader, size int) *Reader {
	size = max(size, MaxFrameSize)
	return &Reader{r: r, buf: make([]byte, size)}
}

// Reset makes r read frames from src, dropping anything buffered and any
// error, and keeping its buffer.
func (r *Reader) Reset(src io.Reader) {
	*r = Reader{r: src, buf: r.buf}
}

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
		// Need more bytes. If the frame could not fit in what is left of
		// the buffer, or too little is left for a useful read, move the
		// partial frame to the front. ParseFrame has bounded the frame by
		// MaxFrameSize, which the buffer holds.
		if free := len(r.buf) - r.end; r.start > 0 && (free < minRead || len(r.buf)-r.start < r.need()) {
			r.end = copy(r.buf, r.buf[r.start:r.end])
			r.start = 0
		}
		n, rerr := r.r.Read(r.buf[r.end:])
		if n < 0 || n > len(r.buf)-r.end {
			r.err = errors.New("wire: reader returned an invalid count")
			return Frame{}, r.err
		}
		r.end += n
		r.rerr = rerr
		if n == 0 && rerr == nil {
			if empty++; empty > 100 {
				r.err = io.ErrNoProgress
				return Frame{}, r.err
			}
		}
	}
}

// need returns the size of the frame at the front of the buffer if its
// length prefix is in, else a header's size.
func (r *Reader) need() int {
	if n, err := FrameLen(r.buf[r.start:r.end]); err == nil {
		return n
	}
	return HeaderSize
}
