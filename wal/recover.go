package wal

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Recovery describes what Open found on disk.
type Recovery struct {
	Segments int // used segments found
	FirstLSN LSN // first LSN the log holds (0 if it holds no segment)
	LastLSN  LSN // last valid record (FirstLSN-1 if none)
	// TailSegment and TailOffset say where the valid data of the last
	// segment ends, TailReason what the scan found there ("" if no segment).
	// Nothing at or after the tail is ever read again: the log continues in
	// a new segment and the cut bytes stay untouched in this file, for
	// inspection, until the segment is retired.
	TailSegment string
	TailOffset  int64
	TailReason  string
	// Torn is true when the tail held bytes of a write that did not
	// complete — neither zeroes nor stale frames from an earlier use of a
	// recycled file.
	Torn bool
	// TailBytes, when Torn, is how many bytes were dropped: from the tail
	// to the next zeroes (16 zero bytes at an 8-aligned offset) or the end
	// of the file. In a recycled file it may include stale bytes of the
	// file's earlier life that follow the torn write.
	TailBytes int64
}

// Open opens the log in dir, creating dir if missing, and recovers it: it
// reads every used segment, verifies every checksum, and cuts a torn tail
// off the last segment. A bad frame anywhere else — in a segment that is not
// the last, or followed by a valid frame — is corruption: Open returns an
// error wrapping ErrCorrupt that names the segment file and offset.
//
// Appends after Open go to a new segment; the last recovered segment is
// never written again. Open fsyncs it, so records that survived a process
// crash only in the page cache are durable before anyone acts on them.
func Open(dir string, opts Options) (*Log, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	l := &Log{
		dir:         dir,
		fs:          opts.FS,
		opts:        opts,
		maxRecord:   opts.MaxRecordBytes,
		flusherDone: make(chan struct{}),
		prepareDone: make(chan struct{}),
	}
	l.flushCond.L, l.spaceCond.L, l.readyCond.L, l.prepCond.L = &l.mu, &l.mu, &l.mu, &l.mu
	l.lazyTimer = time.AfterFunc(time.Hour, l.lazyFire)
	l.lazyTimer.Stop()
	if err := l.fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", dir, err)
	}
	if err := l.recover(); err != nil {
		return nil, err
	}
	if rec := l.recovery; rec.Torn {
		// A repair, not a failure: the operator may want to look at the
		// cut bytes, which stay in place until the segment is retired.
		l.opts.Logger.Warn("wal: cut a torn tail left by an interrupted write",
			"segment", l.path(rec.TailSegment), "offset", rec.TailOffset,
			"dropped_bytes", rec.TailBytes, "reason", rec.TailReason, "last_lsn", uint64(rec.LastLSN))
	}
	l.mu.pending = make([]byte, headroom, 64<<10)
	l.fl.spare = make([]byte, headroom, 64<<10)
	l.mu.nextLSN = l.recovery.LastLSN + 1
	l.fl.flushed = l.recovery.LastLSN
	l.durable.Store(uint64(l.recovery.LastLSN))
	l.last.Store(uint64(l.recovery.LastLSN))
	go l.flushLoop()
	go l.prepareLoop()
	// Wait for the first segment, so that a disk that cannot hold one
	// fails Open: a server never starts serving on a log that fails at its
	// first append.
	l.mu.Lock()
	for len(l.mu.ready) == 0 && l.mu.err == nil {
		l.readyCond.Wait()
	}
	err := l.mu.err
	l.mu.Unlock()
	if err != nil {
		// Both goroutines stop by themselves once the log has failed.
		<-l.flusherDone
		<-l.prepareDone
		return nil, err
	}
	return l, nil
}

// Recovery returns what Open found.
func (l *Log) Recovery() Recovery { return l.recovery }

// recover classifies the files in the directory, scans the used segments
// and sets up l.mu.live, l.mu.pool, l.mu.nextSeq and l.recovery.
func (l *Log) recover() error {
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", l.dir, err)
	}
	var (
		maxSeq  uint64
		used    []*segment
		pool    []string
		discard []string // leftover temporary files and odd-sized unused ones
		r       = &segmentReader{}
	)
	for _, name := range names {
		seq, tmp, ok := parseSegmentName(name)
		if !ok {
			continue
		}
		maxSeq = max(maxSeq, seq)
		if tmp {
			discard = append(discard, name)
			continue
		}
		hdr, size, err := l.readHeader(name)
		if err != nil {
			return err
		}
		hseq, first, ok := parseSegmentHeader(hdr)
		switch {
		case ok && hseq == seq:
			used = append(used, &segment{seq: seq, first: first, name: name, size: size, durable: true})
			continue
		case ok && hseq < seq:
			// The intact header of an earlier incarnation: a recycled file
			// never written under this name, since the first write under
			// it starts at offset 0 with the new header.
		default:
			// A damaged header. It is a spare only if provably no record
			// was ever written to it under this name (zero-filled, or a
			// crash tore the first write before its fsync), since a byte
			// flipped in the header of a used segment must not make its
			// records vanish: refuse while any frame of this segment
			// validates.
			if err := l.checkUnused(r, name, seq, size, hdr); err != nil {
				return err
			}
		}
		if size == l.opts.SegmentBytes {
			pool = append(pool, name) // prepared but never used, or recycled
		} else {
			discard = append(discard, name)
		}
	}
	// Log order is header order. Two segments can share a first LSN only
	// when the older one lost all its records in a crash; the newer one
	// (higher sequence: every Open starts above all names on disk) wins.
	slices.SortFunc(used, func(a, b *segment) int {
		return cmp.Or(cmp.Compare(a.first, b.first), cmp.Compare(a.seq, b.seq))
	})

	for i, s := range used {
		last := i == len(used)-1
		if err := l.scan(r, s, used, i, last); err != nil {
			return err
		}
	}

	for _, name := range discard {
		if err := l.fs.Remove(l.path(name)); err != nil {
			return fmt.Errorf("wal: open: remove %s: %w", name, err)
		}
	}
	if len(used) > 0 {
		if err := l.syncFile(used[len(used)-1].name); err != nil {
			return err
		}
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("wal: open: directory fsync %s: %w", l.dir, err)
	}
	l.mu.live = used
	l.mu.pool = pool
	l.mu.nextSeq = maxSeq + 1
	l.recovery.Segments = len(used)
	if len(used) > 0 {
		l.recovery.FirstLSN = used[0].first
	}
	return nil
}

// readHeader returns the first bytes of a segment file (up to a header) and
// its size.
func (l *Log) readHeader(name string) ([]byte, int64, error) {
	f, err := l.fs.Open(l.path(name))
	if err != nil {
		return nil, 0, fmt.Errorf("wal: open: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, 0, fmt.Errorf("wal: open: size of %s: %w", name, err)
	}
	hdr := make([]byte, min(size, segmentHeaderSize))
	if n, err := f.ReadAt(hdr, 0); n < len(hdr) {
		return nil, 0, fmt.Errorf("wal: open: read %s: %w", name, err)
	}
	return hdr, size, nil
}

// checkUnused returns an error wrapping ErrCorrupt if the file name, whose
// header does not parse as segment seq's, holds a valid frame of segment
// seq anywhere: only the writer of that segment could have put one there,
// after writing the header, so the header was damaged afterwards. A file
// without one never held a record under this name and may be reused.
func (l *Log) checkUnused(r *segmentReader, name string, seq uint64, size int64, hdr []byte) error {
	f, err := l.fs.Open(l.path(name))
	if err != nil {
		return fmt.Errorf("wal: open: %w", err)
	}
	defer f.Close()
	r.reset(f, size, seq)
	off, found, err := r.findFrame(segmentHeaderSize, 1, 0)
	if err != nil {
		return fmt.Errorf("wal: open: read %s: %w", name, err)
	}
	if found {
		return fmt.Errorf("%w: segment %s offset 0: segment header: %s, yet a valid frame of this segment follows at offset %d (the file holds records; it is neither read nor reused)",
			ErrCorrupt, l.path(name), headerWhy(hdr, seq), off)
	}
	return nil
}

func (l *Log) syncFile(name string) error {
	f, err := l.fs.Open(l.path(name))
	if err != nil {
		return fmt.Errorf("wal: open: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: open: fsync %s: %w", name, err)
	}
	return nil
}

// scan verifies used[i]. A segment that is not the last must hold every
// record up to its successor's first LSN; anything after that is stale and
// ignored. The last segment is read up to its first bad frame, which is the
// tail, provided no valid frame of this segment follows it.
func (l *Log) scan(r *segmentReader, s *segment, used []*segment, i int, last bool) error {
	f, err := l.fs.Open(l.path(s.name))
	if err != nil {
		return fmt.Errorf("wal: open: %w", err)
	}
	defer f.Close()
	r.reset(f, s.size, s.seq)
	until := LSN(0)
	if !last {
		until = used[i+1].first - 1
	}
	lsn := s.first
	for last || lsn <= until {
		_, why, err := r.next(lsn)
		if err != nil {
			return fmt.Errorf("wal: open: read %s: %w", s.name, err)
		}
		if why != "" {
			if !last {
				return fmt.Errorf("%w: segment %s offset %d: %s (records up to LSN %d expected before the next segment)",
					ErrCorrupt, l.path(s.name), r.off, why, until)
			}
			break
		}
		lsn++
	}
	if !last {
		return nil
	}
	tail, why := r.off, r.lastWhy
	torn := why != whyZeroes && r.lastLSN >= s.first
	off, found, err := r.findFrame(tail+8, s.first, s.first)
	if err != nil {
		return fmt.Errorf("wal: open: read %s: %w", s.name, err)
	}
	if found {
		return fmt.Errorf("%w: segment %s offset %d: %s, yet a valid frame follows at offset %d",
			ErrCorrupt, l.path(s.name), tail, why, off)
	}
	if torn {
		if l.recovery.TailBytes, err = r.extent(tail); err != nil {
			return fmt.Errorf("wal: open: read %s: %w", s.name, err)
		}
	}
	l.recovery.LastLSN = lsn - 1
	l.recovery.TailSegment, l.recovery.TailOffset, l.recovery.TailReason = s.name, tail, why
	l.recovery.Torn = torn
	return nil
}

// whyZeroes is decodeFrame's verdict on an all-zero frame header.
const whyZeroes = "zeroes (end of written data)"

// readChunk is how much segmentReader reads at a time.
const readChunk = 1 << 20

// segmentReader reads frames from a segment file through a window buffer.
type segmentReader struct {
	f       File
	size    int64
	seed    uint32
	off     int64  // offset of the next frame
	buf     []byte // file bytes [bufOff, bufOff+len(buf))
	bufOff  int64
	lastWhy string // why the last next failed
	lastLSN LSN    // the LSN field of the frame header next last looked at
	checked int64  // bytes findFrame checksummed since reset (for tests)
}

func (r *segmentReader) reset(f File, size int64, seq uint64) {
	r.f, r.size, r.seed = f, size, segmentSeed(seq)
	r.off, r.buf, r.bufOff, r.checked = segmentHeaderSize, r.buf[:0], 0, 0
}

// window returns n bytes of the file from r.off, fewer only where the file
// ends.
func (r *segmentReader) window(n int) ([]byte, error) {
	n = int(max(0, min(int64(n), r.size-r.off)))
	if n == 0 {
		return nil, nil
	}
	if r.off >= r.bufOff && r.off+int64(n) <= r.bufOff+int64(len(r.buf)) {
		s := r.off - r.bufOff
		return r.buf[s : s+int64(n)], nil
	}
	m := int(min(int64(max(n, readChunk)), r.size-r.off))
	if cap(r.buf) < m {
		r.buf = make([]byte, m)
	}
	r.buf = r.buf[:m]
	k, err := r.f.ReadAt(r.buf, r.off)
	if k < m {
		r.buf = r.buf[:0]
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	r.bufOff = r.off
	return r.buf[:n], nil
}

// next decodes the frame at r.off, which must carry want, and advances past
// it. A bad frame is reported in why (and r.lastWhy), with r.off left on it;
// err is for read failures only. data is valid until the next call.
func (r *segmentReader) next(want LSN) (data []byte, why string, err error) {
	h, err := r.window(frameHeaderSize)
	if err != nil {
		return nil, "", err
	}
	r.lastLSN = 0
	need := frameHeaderSize
	if len(h) == frameHeaderSize {
		r.lastLSN = LSN(le.Uint64(h[8:16]))
		if n := le.Uint32(h[4:8]); n <= maxFormatRecord {
			need = frameSize(int(n))
		}
	}
	b, err := r.window(need)
	if err != nil {
		return nil, "", err
	}
	data, size, why := decodeFrame(b, r.seed, want)
	if why != "" {
		if len(b) == 0 {
			why = "end of segment file"
		}
		r.lastWhy = why
		return nil, why, nil
	}
	r.off += int64(size)
	return data, "", nil
}

// findFrame looks for a frame of this segment with an LSN of at least
// minLSN at any 8-aligned offset from start on. Only the writer of this
// segment could have put one there, after the frames before it, so finding
// one means the frame at the tail was not the end of the log.
//
// first, if known (not 0), is the segment's first LSN. Its frames are
// consecutive from first at offset segmentHeaderSize, each at least
// frameHeaderSize bytes, so the one at offset o carries an LSN of at most
// first + (o − segmentHeaderSize)/frameHeaderSize: a header claiming more
// is not one of them and its frame is not checksummed. Without that bound
// stale bytes of a recycled file's earlier incarnation (ids, payloads)
// pass for a header every few hundred offsets, each claiming megabytes,
// and a 64 MiB segment took minutes of checksumming to open.
func (r *segmentReader) findFrame(start int64, minLSN, first LSN) (int64, bool, error) {
	for o := start; o+frameHeaderSize <= r.size; o += 8 {
		r.off = o
		h, err := r.window(frameHeaderSize)
		if err != nil {
			return 0, false, err
		}
		n, lsn := le.Uint32(h[4:8]), LSN(le.Uint64(h[8:16]))
		if lsn < minLSN || n > maxFormatRecord || o+int64(frameSize(int(n))) > r.size {
			continue
		}
		if first != 0 && lsn-first > LSN((o-segmentHeaderSize)/frameHeaderSize) {
			continue
		}
		b, err := r.window(frameSize(int(n)))
		if err != nil {
			return 0, false, err
		}
		r.checked += int64(len(b))
		if _, _, why := decodeFrame(b, r.seed, lsn); why == "" {
			return o, true, nil
		}
	}
	return 0, false, nil
}

// extent returns how many bytes from start on come before the first 16
// zero bytes at an 8-aligned offset, or the end of the file.
func (r *segmentReader) extent(start int64) (int64, error) {
	for o := start; o < r.size; o += 8 {
		r.off = o
		h, err := r.window(frameHeaderSize)
		if err != nil {
			return 0, err
		}
		if allZero(h) {
			return o - start, nil
		}
	}
	return r.size - start, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Replay calls fn for every durable record from LSN from on, in order. data
// is valid only during the call; an error from fn stops the replay and is
// returned. Replay may run right after Open, before any append, and also
// alongside appends (it stops at the durable watermark it started with);
// it holds off Retire and Close while it runs, so fn must not call them.
// Replaying from before the first record
// still in the log returns an error wrapping ErrRetired.
func (l *Log) Replay(from LSN, fn func(lsn LSN, data []byte) error) error {
	l.retireMu.RLock()
	defer l.retireMu.RUnlock()
	l.mu.Lock()
	if l.mu.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	segs := slices.Clone(l.mu.live)
	upto := LSN(l.durable.Load())
	l.mu.Unlock()
	from = max(from, 1)
	if len(segs) == 0 || from > upto {
		return nil
	}
	if from < segs[0].first {
		return fmt.Errorf("%w: replay from LSN %d, but the log starts at LSN %d", ErrRetired, from, segs[0].first)
	}
	r := &segmentReader{}
	for i, s := range segs {
		end := upto
		if i+1 < len(segs) {
			end = min(end, segs[i+1].first-1)
		}
		if end < from || end < s.first {
			continue
		}
		if err := l.replaySegment(r, s, from, end, fn); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) replaySegment(r *segmentReader, s *segment, from, end LSN, fn func(LSN, []byte) error) error {
	f, err := l.fs.Open(l.path(s.name))
	if err != nil {
		return fmt.Errorf("wal: replay: %w", err)
	}
	defer f.Close()
	r.reset(f, s.size, s.seq)
	for lsn := s.first; lsn <= end; lsn++ {
		data, why, err := r.next(lsn)
		if err != nil {
			return fmt.Errorf("wal: replay: read %s: %w", s.name, err)
		}
		if why != "" {
			return fmt.Errorf("%w: segment %s offset %d: %s", ErrCorrupt, l.path(s.name), r.off, why)
		}
		if lsn >= from {
			if err := fn(lsn, data); err != nil {
				return err
			}
		}
	}
	return nil
}
