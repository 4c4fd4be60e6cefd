package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// LSN is a record's position in the log: records are numbered 1, 2, 3, ...
// across segments, with no gaps. 0 means "no record".
type LSN uint64

// Defaults for Options.
const (
	DefaultSegmentBytes    = 64 << 20
	DefaultMaxRecordBytes  = 1 << 20
	DefaultMaxPendingBytes = 4 << 20
	DefaultSegmentsAhead   = 2
	DefaultLazyDelay       = 5 * time.Millisecond
	DefaultMaxWaiters      = 1 << 16
	// MinSegmentBytes is the smallest SegmentBytes Open accepts.
	MinSegmentBytes = 256
)

// Errors callers branch on. I/O failures are returned wrapped in ErrFailed
// together with the cause (errors.Is works for both, e.g. syscall.ENOSPC).
var (
	// ErrCorrupt: Open or Replay found a bad frame that is not a torn tail,
	// or a damaged segment header in a file that holds records. The
	// message names the segment file and the offset.
	ErrCorrupt = errors.New("wal: corrupt log")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("wal: log closed")
	// ErrTooLarge: a record longer than Options.MaxRecordBytes.
	ErrTooLarge = errors.New("wal: record too large")
	// ErrFailed: a write, fsync or directory operation failed earlier; the
	// log accepts nothing more. Restart and recover from disk.
	ErrFailed = errors.New("wal: log failed")
	// ErrRetired: Replay was asked for records that were retired.
	ErrRetired = errors.New("wal: records retired")
)

// Options configure a Log. The zero value is usable.
type Options struct {
	// FS is the file system; nil means the operating system's.
	FS FS
	// SegmentBytes is the size of every segment file (default 64 MiB,
	// at least MinSegmentBytes; rounded down to a multiple of 8).
	SegmentBytes int64
	// NoGroupCommit gives every record its own write and fsync, one after
	// another: the "sync per append" baseline.
	NoGroupCommit bool
	// OnSync, if set, is called by the flusher after each write+fsync of
	// segment data — once per batch, twice when a batch crosses into a new
	// segment, once per record with NoGroupCommit — with the records and
	// bytes it made durable and the time the write and fsync took (for
	// metrics; wal imports no metrics library). It runs after the waiters
	// were completed and must not block or call into the Log.
	OnSync func(records, bytes int, d time.Duration)
	// MaxRecordBytes bounds Append (default 1 MiB); it is lowered to what fits
	// in an empty segment.
	MaxRecordBytes int
	// MaxPendingBytes bounds the bytes appended but not yet taken by the
	// flusher (default 4 MiB); Append blocks beyond it (back-pressure).
	MaxPendingBytes int
	// MaxWaiters bounds the Waiters registered (by Notify, AppendNotify,
	// AppendSync and Sync) for records not yet durable (default 65,536,
	// ~1.5 MiB); registering blocks beyond it until a batch completes some
	// (back-pressure). Pending bytes bound the records; this bounds the
	// waiters, which Notify can register many to a record.
	MaxWaiters int
	// SegmentsAhead is how many segment files are kept ready, written and
	// synced, ahead of need (default 2).
	SegmentsAhead int
	// LazyDelay bounds how long a record appended with AppendLazy waits
	// for a batch (default 5 ms): if nothing else makes the flusher write
	// by then, it writes and syncs the lazy records on their own.
	LazyDelay time.Duration
	// Logger receives what Open repaired (a torn tail cut off: file,
	// offset, bytes dropped); nil means slog.Default(). Failures are
	// returned, not logged.
	Logger *slog.Logger
}

// Waiter is told once, for the LSN it was registered for, either that the
// record is durable (LogDurable) or that it never will be because the log
// failed (LogFailed). Progress and failure travel apart: LogDurable's LSN
// is always durable, so a waiter that keeps a durable watermark can never
// advance it to a record whose write or fsync failed. Both are called on
// the flusher goroutine, in LSN order, and must not block or call into the
// Log; Notify calls them on the caller's goroutine when the answer is
// already known.
type Waiter interface {
	// LogDurable: every record up to lsn is durable.
	LogDurable(lsn LSN)
	// LogFailed: record lsn is not durable and never will be; err is the
	// failure that poisoned the log (wrapping ErrFailed).
	LogFailed(lsn LSN, err error)
}

// headroom is reserved at the front of each batch buffer so that a segment
// header can be written in the same write as the frames that follow it.
const headroom = segmentHeaderSize

// waiter is a registered Notify.
type waiter struct {
	lsn LSN
	w   Waiter
}

// segment is a used segment file: it has (or will have, once its first
// batch is synced) a header naming seq and first.
type segment struct {
	seq   uint64 // immutable
	first LSN    // immutable: LSN of its first record
	name  string // immutable: base name
	size  int64  // immutable
	// durable: its header has been synced. Guarded by Log.mu.
	durable bool
}

// readySegment is a prepared, synced, full-size segment file not yet used.
type readySegment struct {
	seq  uint64
	name string
	f    File
}

// Log is a write-ahead log. All methods are safe for concurrent use.
//
// Goroutines: the flusher (flushLoop) writes and syncs batches and completes
// waiters; the preparer (prepareLoop) makes segment files ready ahead of
// need. Close stops and waits for both.
type Log struct {
	// Immutable after Open.
	dir       string
	fs        FS
	opts      Options // normalized
	maxRecord int
	recovery  Recovery

	// durable is the durable-LSN watermark. Stored by the flusher with mu
	// held; loaded anywhere.
	durable atomic.Uint64
	// last is the last appended LSN. Stored with mu held; loaded anywhere.
	last     atomic.Uint64
	counters struct {
		batches, syncs, bytes, created, recycled, removed atomic.Uint64
	}

	mu struct {
		sync.Mutex
		// pending holds frames appended but not yet taken by the flusher,
		// after headroom bytes. Checksums are filled in by the flusher.
		pending []byte
		nextLSN LSN
		// waiters registered by Notify for LSNs not yet durable, mostly in
		// LSN order.
		waiters     []waiter
		err         error // the failure that poisoned the log; set once
		closing     bool  // Close has begun: no more appends
		flusherIdle bool  // the flusher waits on flushCond
		// urgent: a pending record was appended with Append (not
		// AppendLazy), or Sync waits, or a lazy record's delay ran out:
		// the flusher takes the pending batch now. Cleared when it does.
		urgent bool
		// lazyArmed: lazyTimer runs, so pending lazy records will turn
		// urgent within LazyDelay.
		lazyArmed bool
		spaceWait int // appenders and Notify blocked on spaceCond
		// live are the used segments, oldest first; the last is the one being
		// written (once the flusher started writing this incarnation).
		live []*segment
		// ready are prepared segment files, used in order.
		ready []readySegment
		// pool are unused full-size segment files found by Open, to be
		// renamed to fresh sequence numbers and reused.
		pool        []string
		nextSeq     uint64 // next unused segment sequence number
		stopPrepare bool
	}
	flushCond sync.Cond // on mu: pending became urgent, or closing/failed
	// lazyTimer makes pending lazy records urgent (lazyFire) LazyDelay
	// after the first of them; armed under mu.
	lazyTimer *time.Timer
	spaceCond sync.Cond // on mu: pending was taken, waiters completed, or closing/failed
	readyCond sync.Cond // on mu: a segment became ready, or failed
	prepCond  sync.Cond // on mu: a ready segment was taken, or stop/failed

	// retireMu serializes Retire and keeps segments from being retired
	// under a running Replay (read lock) or Close (write lock).
	retireMu sync.RWMutex

	// fl is owned by the flusher goroutine (and read by Close after it ends).
	fl struct {
		spare   []byte // the batch buffer not lent to appenders
		file    File   // segment being written; nil before the first batch
		seg     *segment
		off     int64  // next write offset in file
		seed    uint32 // checksum seed of seg
		fresh   bool   // seg's header is not yet written
		flushed LSN    // last LSN written
		firing  []waiter
	}

	flusherDone chan struct{}
	prepareDone chan struct{}
}

func (o *Options) normalize() error {
	if o.FS == nil {
		o.FS = OS()
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	o.SegmentBytes &^= 7
	if o.SegmentBytes < MinSegmentBytes {
		return fmt.Errorf("wal: SegmentBytes %d below the minimum %d", o.SegmentBytes, MinSegmentBytes)
	}
	if o.MaxRecordBytes <= 0 {
		o.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if fit := int(o.SegmentBytes) - segmentHeaderSize - frameHeaderSize; o.MaxRecordBytes > fit {
		o.MaxRecordBytes = fit
	}
	if o.MaxRecordBytes > maxFormatRecord {
		o.MaxRecordBytes = maxFormatRecord
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	o.MaxPendingBytes = max(o.MaxPendingBytes, frameSize(o.MaxRecordBytes))
	if o.MaxWaiters <= 0 {
		o.MaxWaiters = DefaultMaxWaiters
	}
	if o.SegmentsAhead <= 0 {
		o.SegmentsAhead = DefaultSegmentsAhead
	}
	if o.LazyDelay <= 0 {
		o.LazyDelay = DefaultLazyDelay
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Append adds a record to the log and returns its LSN at once; it copies
// data. The record is durable once Sync(lsn) returns nil or a Waiter is told
// so. Append blocks only while MaxPendingBytes are waiting for the flusher
// (AppendNotify and AppendSync also while MaxWaiters wait).
func (l *Log) Append(data []byte) (LSN, error) { return l.append(data, nil, false) }

// AppendLazy is Append for a record nothing waits on urgently (the end of
// a transaction, a decision whose acknowledgement may come late): it does
// not wake the flusher. The record becomes durable with the next batch the
// flusher writes for any other reason — an Append, a Sync — or, if none
// comes, Options.LazyDelay after it was appended. Under load the lazy
// records ride in batches that are written anyway and cost no fsync of
// their own; a lone lazy record costs one after LazyDelay. A Waiter
// registered for it by Notify is told as usual, when that happens.
func (l *Log) AppendLazy(data []byte) (LSN, error) { return l.append(data, nil, true) }

// AppendNotify is Append followed by Notify(lsn, w), under one lock.
func (l *Log) AppendNotify(data []byte, w Waiter) (LSN, error) { return l.append(data, w, false) }

// AppendSync is Append followed by Sync, registering the wait under the
// same lock as the append.
func (l *Log) AppendSync(data []byte) (LSN, error) {
	w := syncWaiters.Get().(*syncWaiter)
	lsn, err := l.append(data, w, false)
	if err == nil {
		err = <-w.done
	}
	syncWaiters.Put(w)
	return lsn, err
}

// syncWaiter is the Waiter behind Sync: the caller parks on done, and only
// the flusher's completion of its own LSN wakes it — no broadcast, no herd
// of goroutines re-checking a watermark under a lock. Pooled, so waiting
// does not allocate.
type syncWaiter struct{ done chan error }

// LogDurable never blocks: done has room for the one result.
func (w *syncWaiter) LogDurable(LSN) { w.done <- nil }

// LogFailed never blocks, as LogDurable.
func (w *syncWaiter) LogFailed(_ LSN, err error) { w.done <- err }

var syncWaiters = sync.Pool{New: func() any { return &syncWaiter{done: make(chan error, 1)} }}

func (l *Log) append(data []byte, w Waiter, lazy bool) (LSN, error) {
	if len(data) > l.maxRecord {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), l.maxRecord)
	}
	n := frameSize(len(data))
	l.mu.Lock()
	if err := l.roomLocked(n, w != nil); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	lsn := l.frameLocked(data, n)
	if w != nil {
		l.mu.waiters = append(l.mu.waiters, waiter{lsn, w})
	}
	switch {
	case !lazy:
		l.hurryLocked()
	case !l.mu.urgent && !l.mu.lazyArmed:
		l.mu.lazyArmed = true
		l.lazyTimer.Reset(l.opts.LazyDelay)
	}
	l.mu.Unlock()
	return lsn, nil
}

// AppendEach appends the records of size bytes each that data holds back
// to back, in order: what len(data)/size calls of Append would do, with
// the same frames and LSNs, under one lock instead of one per record (the
// participant's ledger appends thousands of 17-byte entries at once). The
// flusher is hurried once, after the last. It returns the LSN of the first
// record and how many were appended: all, unless err says why not.
func (l *Log) AppendEach(data []byte, size int) (first LSN, appended int, err error) {
	if size <= 0 || len(data)%size != 0 {
		panic(fmt.Sprintf("wal: AppendEach of %d bytes in records of %d", len(data), size))
	}
	if size > l.maxRecord {
		return 0, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, l.maxRecord)
	}
	n := frameSize(size)
	l.mu.Lock()
	defer l.mu.Unlock()
	// Room for the batch (as far as MaxPendingBytes lets it wait here) in
	// one growth rather than a doubling every few thousand records, each
	// copying what is pending.
	l.mu.pending = slices.Grow(l.mu.pending, min(len(data)/size*n, l.opts.MaxPendingBytes))
	for off := 0; off < len(data); off += size {
		if err := l.roomLocked(n, false); err != nil {
			return first, appended, err
		}
		lsn := l.frameLocked(data[off:off+size], n)
		if appended == 0 {
			first = lsn
		}
		appended++
	}
	if appended > 0 {
		l.hurryLocked()
	}
	return first, appended, nil
}

// roomLocked waits until a frame of n bytes (and, with waiter, one more
// waiter) may be appended, and returns the log's failure or ErrClosed if
// nothing may be. l.mu is held.
func (l *Log) roomLocked(n int, waiter bool) error {
	for l.mu.err == nil && !l.mu.closing && (len(l.mu.pending) > headroom &&
		len(l.mu.pending)-headroom+n > l.opts.MaxPendingBytes ||
		waiter && len(l.mu.waiters) >= l.opts.MaxWaiters) {
		l.waitRoomLocked()
	}
	if err := l.mu.err; err != nil {
		return err
	}
	if l.mu.closing {
		return ErrClosed
	}
	return nil
}

// frameLocked appends data's frame, of n bytes, to the pending records and
// returns its LSN. l.mu is held, and roomLocked has made room.
func (l *Log) frameLocked(data []byte, n int) LSN {
	lsn := l.mu.nextLSN
	l.mu.nextLSN++
	p := len(l.mu.pending)
	l.mu.pending = slices.Grow(l.mu.pending, n)[:p+n]
	b := l.mu.pending[p : p+n]
	putFrameHeader(b, len(data), lsn)
	clear(b[frameHeaderSize+copy(b[frameHeaderSize:], data):]) // padding; the buffer is reused
	l.last.Store(uint64(lsn))
	return lsn
}

// waitRoomLocked waits for the flusher to take the pending records or
// complete waiters. l.mu is held.
func (l *Log) waitRoomLocked() {
	if len(l.mu.pending) > headroom {
		// Full of lazy records, perhaps, or the waiters wait for pending
		// ones: write them now rather than wait out LazyDelay.
		l.hurryLocked()
	}
	l.mu.spaceWait++
	l.spaceCond.Wait()
	l.mu.spaceWait--
}

// hurryLocked makes the pending records urgent and wakes the flusher if it
// sleeps. l.mu is held.
func (l *Log) hurryLocked() {
	l.mu.urgent = true
	if l.mu.flusherIdle {
		l.mu.flusherIdle = false
		l.flushCond.Signal()
	}
}

// lazyFire runs on the lazy timer's goroutine: LazyDelay has passed since
// a lazy record was appended, so whatever is pending is written now. The
// flusher disarms the timer when a batch takes the lazy records along; one
// that fires all the same (Stop lost the race) finds nothing pending, or
// records younger than LazyDelay — writing those a little early is
// harmless.
func (l *Log) lazyFire() {
	l.mu.Lock()
	l.mu.lazyArmed = false
	if len(l.mu.pending) > headroom {
		l.hurryLocked()
	}
	l.mu.Unlock()
}

// Sync waits until lsn is durable, hurrying the flusher if lsn was
// appended lazily. It does no I/O and takes no lock when lsn is already
// durable. It returns the log's failure if lsn can no longer
// become durable; an LSN made durable before a failure still returns nil.
// Sync of an LSN never appended is a programmer error and panics.
func (l *Log) Sync(lsn LSN) error {
	if LSN(l.durable.Load()) >= lsn {
		return nil
	}
	// lsn may be a lazy record still pending: someone waits for it now.
	// (Pending records may all be newer than lsn; writing them early is
	// harmless.)
	l.mu.Lock()
	if len(l.mu.pending) > headroom {
		l.hurryLocked()
	}
	l.mu.Unlock()
	w := syncWaiters.Get().(*syncWaiter)
	l.Notify(lsn, w)
	err := <-w.done
	syncWaiters.Put(w)
	return err
}

// Notify arranges for w.LogDurable(lsn) or w.LogFailed(lsn, err) to be
// called once: at once on
// this goroutine if lsn is already durable or the log has failed, otherwise
// on the flusher goroutine, in LSN order with other waiters. Registering
// does not allocate once the waiter list has grown to its working size; it
// blocks while MaxWaiters are registered, until a batch completes some.
// Notify of an LSN never appended is a programmer error and panics.
func (l *Log) Notify(lsn LSN, w Waiter) {
	l.mu.Lock()
	for {
		if lsn <= LSN(l.durable.Load()) {
			l.mu.Unlock()
			w.LogDurable(lsn)
			return
		}
		if err := l.mu.err; err != nil {
			l.mu.Unlock()
			w.LogFailed(lsn, err)
			return
		}
		if lsn >= l.mu.nextLSN {
			next := l.mu.nextLSN
			l.mu.Unlock()
			panic(fmt.Sprintf("wal: Notify(%d) beyond the last appended LSN %d", lsn, next-1))
		}
		// No need to look at closing: Close has the flusher write
		// everything and complete every waiter, so while this waits, lsn
		// becomes durable or the log fails.
		if len(l.mu.waiters) < l.opts.MaxWaiters {
			break
		}
		l.waitRoomLocked()
	}
	l.mu.waiters = append(l.mu.waiters, waiter{lsn, w})
	l.mu.Unlock()
}

// DurableLSN returns the highest LSN known durable (0 if none).
func (l *Log) DurableLSN() LSN { return LSN(l.durable.Load()) }

// LastLSN returns the highest LSN appended (0 if none).
func (l *Log) LastLSN() LSN { return LSN(l.last.Load()) }

// Stats are counters since Open and a snapshot of the segment files.
type Stats struct {
	Appends          uint64 // records appended since Open
	Batches          uint64 // batches the flusher wrote
	Syncs            uint64 // fsyncs of segment data (not of directories or new files)
	BytesWritten     uint64 // bytes written to segments (frames and headers)
	Segments         int    // used segments (holding records not yet retired)
	ReadySegments    int    // prepared segments waiting to be used
	SegmentsCreated  uint64 // segment files created and zero-filled
	SegmentsRecycled uint64 // segment files reused under a new name
	SegmentsRemoved  uint64 // segment files deleted
	FirstLSN         LSN    // first LSN still in the log (0 if none)
	DurableLSN       LSN
	LastLSN          LSN
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	s := Stats{
		Appends:          l.last.Load() - uint64(l.recovery.LastLSN),
		Batches:          l.counters.batches.Load(),
		Syncs:            l.counters.syncs.Load(),
		BytesWritten:     l.counters.bytes.Load(),
		SegmentsCreated:  l.counters.created.Load(),
		SegmentsRecycled: l.counters.recycled.Load(),
		SegmentsRemoved:  l.counters.removed.Load(),
		DurableLSN:       l.DurableLSN(),
		LastLSN:          l.LastLSN(),
	}
	l.mu.Lock()
	s.Segments, s.ReadySegments = len(l.mu.live), len(l.mu.ready)
	if len(l.mu.live) > 0 {
		s.FirstLSN = l.mu.live[0].first
	}
	l.mu.Unlock()
	return s
}

// Close makes everything appended durable, stops the goroutines and closes
// the files. It returns the log's failure, if any.
func (l *Log) Close() error {
	l.retireMu.Lock()
	defer l.retireMu.Unlock()
	l.mu.Lock()
	if l.mu.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	l.mu.closing = true
	l.flushCond.Signal()
	l.spaceCond.Broadcast()
	l.mu.Unlock()
	<-l.flusherDone
	l.lazyTimer.Stop() // a late lazyFire finds nothing pending: harmless

	l.mu.Lock()
	l.mu.stopPrepare = true
	l.prepCond.Broadcast()
	l.mu.Unlock()
	<-l.prepareDone

	// Close errors are ignored: everything written was synced (or the log
	// has failed and says so below); close loses nothing.
	if l.fl.file != nil {
		_ = l.fl.file.Close()
	}
	l.mu.Lock()
	for _, r := range l.mu.ready {
		_ = r.f.Close()
	}
	l.mu.ready = nil
	err := l.mu.err
	l.mu.Unlock()
	return err
}

// fail poisons the log with err (the first failure wins) and wakes
// everyone; the flusher then fails the waiters.
func (l *Log) fail(err error) {
	l.mu.Lock()
	if l.mu.err == nil {
		l.mu.err = err
	}
	l.flushCond.Broadcast()
	l.spaceCond.Broadcast()
	l.readyCond.Broadcast()
	l.prepCond.Broadcast()
	l.mu.Unlock()
}

// ioFailure wraps an I/O error into the error that poisons the log. task
// says what the log was doing ("preparing segment X"), op which operation
// failed on which file: whoever reports the error later (an append, a
// retirement, Close) reports the failure where it happened.
func ioFailure(task, op, path string, err error) error {
	what := "failed"
	if errors.Is(err, syscall.ENOSPC) {
		what = "disk full (no space left on device)"
	}
	return fmt.Errorf("%w: %s: %s of %s: %s; the log accepts no more records: %w",
		ErrFailed, task, op, filepath.Base(path), what, err)
}

func (l *Log) path(name string) string { return filepath.Join(l.dir, name) }

// flushLoop is the flusher goroutine: it takes everything pending, writes it
// with one write and one fsync (two of each when it crosses into a new
// segment), then completes every waiter the batch covered, in LSN order.
// It never waits for a timer when a record is urgent: it sleeps until the
// next Append (or Sync), so a lone appender pays one hand-off, not a
// batching delay. Lazy records alone wake it only after LazyDelay.
func (l *Log) flushLoop() {
	defer close(l.flusherDone)
	for {
		l.mu.Lock()
		for (len(l.mu.pending) == headroom || !l.mu.urgent) && l.mu.err == nil && !l.mu.closing {
			l.mu.flusherIdle = true
			l.flushCond.Wait()
		}
		l.mu.flusherIdle = false
		if err := l.mu.err; err != nil {
			ws := l.mu.waiters
			l.mu.waiters = nil
			l.mu.Unlock()
			sortWaiters(ws)
			for _, w := range ws {
				w.w.LogFailed(w.lsn, err)
			}
			return
		}
		if len(l.mu.pending) == headroom { // closing, and all is written
			l.mu.Unlock()
			return
		}
		batch := l.mu.pending
		l.mu.pending = l.fl.spare[:headroom]
		l.mu.urgent = false
		if l.mu.lazyArmed {
			// The batch takes every lazy record along. Left armed, the
			// timer would fire early for the next lazy record and write it
			// alone: an extra fsync competing with the next urgent batch's
			// for the disk — at low load about one batch in ten.
			l.mu.lazyArmed = false
			l.lazyTimer.Stop()
		}
		if l.mu.spaceWait > 0 {
			l.spaceCond.Broadcast()
		}
		l.mu.Unlock()

		err := l.writeBatch(batch)
		l.fl.spare = batch
		if err != nil {
			l.fail(err)
			continue
		}
		l.counters.batches.Add(1)
	}
}

// writeBatch writes the frames in buf[headroom:] and syncs them, rolling
// over to a new segment where the current one is full. With NoGroupCommit
// each frame gets its own write and sync.
func (l *Log) writeBatch(buf []byte) error {
	for p := headroom; p < len(buf); {
		if l.fl.file == nil || l.fl.off+int64(frameSize(int(le.Uint32(buf[p+4:])))) > l.opts.SegmentBytes {
			if err := l.rollover(l.fl.flushed + 1); err != nil {
				return err
			}
		}
		start, lsn := p, l.fl.flushed
		for p < len(buf) {
			size := frameSize(int(le.Uint32(buf[p+4:])))
			if l.fl.off+int64(p-start+size) > l.opts.SegmentBytes {
				break
			}
			sealFrame(buf[p:], l.fl.seed)
			p += size
			lsn++
			if l.opts.NoGroupCommit {
				break
			}
		}
		w, off := buf[start:p], l.fl.off
		if l.fl.fresh {
			// The header goes just before the frames, over bytes that are
			// either headroom or frames already written to the old segment.
			w, off = buf[start-segmentHeaderSize:p], 0
			putSegmentHeader(w, l.fl.seg.seq, l.fl.seg.first)
		}
		// The write and the fdatasync below keep this goroutine's P for
		// their whole duration: Go hands a P on from a system call only
		// when sysmon notices, 20 µs to 10 ms later. With few Ps (a
		// container with one CPU, GOMAXPROCS=1) the goroutines the pump
		// readied with this batch — its messages to the network, such as a
		// staged transaction's prepares, sent beside the log's flush —
		// would wait for the disk. Yield first so that they go out before
		// (BenchmarkReadiedBesideFlush measures the wait).
		if yieldBeforeWrite {
			runtime.Gosched()
		}
		var t0 time.Time
		if l.opts.OnSync != nil {
			t0 = time.Now()
		}
		if _, err := l.fl.file.WriteAt(w, off); err != nil {
			return ioFailure("writing segment "+l.fl.seg.name, "write", l.fl.seg.name, err)
		}
		if err := l.fl.file.Sync(); err != nil {
			return ioFailure("writing segment "+l.fl.seg.name, "fsync", l.fl.seg.name, err)
		}
		l.counters.syncs.Add(1)
		l.counters.bytes.Add(uint64(len(w)))
		l.fl.off += int64(p - start)
		records := int(lsn - l.fl.flushed)
		l.fl.flushed = lsn
		l.markDurable(lsn)
		if l.opts.OnSync != nil {
			l.opts.OnSync(records, len(w), time.Since(t0))
		}
	}
	return nil
}

// yieldBeforeWrite is writeBatch's yield; only BenchmarkReadiedBesideFlush
// turns it off, to show what it saves.
var yieldBeforeWrite = true

// rollover switches the flusher to the next ready segment, whose first
// record will be first. The current segment, if any, is fully synced.
func (l *Log) rollover(first LSN) error {
	if l.fl.file != nil {
		_ = l.fl.file.Close() // synced already; close loses nothing
		l.fl.file = nil
	}
	l.mu.Lock()
	for len(l.mu.ready) == 0 && l.mu.err == nil {
		l.readyCond.Wait()
	}
	if err := l.mu.err; err != nil {
		l.mu.Unlock()
		return err
	}
	r := l.mu.ready[0]
	l.mu.ready = slices.Delete(l.mu.ready, 0, 1)
	seg := &segment{seq: r.seq, first: first, name: r.name, size: l.opts.SegmentBytes}
	l.mu.live = append(l.mu.live, seg)
	l.prepCond.Signal()
	l.mu.Unlock()
	l.fl.file, l.fl.seg, l.fl.off = r.f, seg, segmentHeaderSize
	l.fl.seed, l.fl.fresh = segmentSeed(r.seq), true
	return nil
}

// markDurable advances the watermark to lsn and completes the waiters it
// covers, in LSN order, on the flusher goroutine.
func (l *Log) markDurable(lsn LSN) {
	firing := l.fl.firing[:0]
	l.mu.Lock()
	l.durable.Store(uint64(lsn))
	if l.fl.fresh {
		l.fl.seg.durable = true
		l.fl.fresh = false
	}
	keep := l.mu.waiters[:0]
	for _, w := range l.mu.waiters {
		if w.lsn <= lsn {
			firing = append(firing, w)
		} else {
			keep = append(keep, w)
		}
	}
	clear(l.mu.waiters[len(keep):]) // drop references to completed waiters
	if len(keep) < len(l.mu.waiters) && l.mu.spaceWait > 0 {
		l.spaceCond.Broadcast() // room for waiters
	}
	l.mu.waiters = keep
	l.mu.Unlock()

	sortWaiters(firing)
	for _, w := range firing {
		w.w.LogDurable(w.lsn)
	}
	clear(firing)
	l.fl.firing = firing[:0]
}

// sortWaiters puts waiters in LSN order; they are usually sorted already.
func sortWaiters(ws []waiter) {
	cmp := func(a, b waiter) int {
		switch {
		case a.lsn < b.lsn:
			return -1
		case a.lsn > b.lsn:
			return 1
		}
		return 0
	}
	if !slices.IsSortedFunc(ws, cmp) {
		slices.SortStableFunc(ws, cmp)
	}
}
