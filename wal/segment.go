package wal

import (
	"fmt"
	"slices"
)

// zeroBlock is what new segment files are filled with.
var zeroBlock [256 << 10]byte

// prepareLoop is the preparer goroutine: it keeps SegmentsAhead segment
// files ready — written to their full size, synced, renamed to their final
// name and the directory synced — so that the flusher never creates, grows
// or zero-fills a file on the commit path.
func (l *Log) prepareLoop() {
	defer close(l.prepareDone)
	for {
		l.mu.Lock()
		for !l.mu.stopPrepare && l.mu.err == nil && len(l.mu.ready) >= l.opts.SegmentsAhead {
			l.prepCond.Wait()
		}
		if l.mu.stopPrepare || l.mu.err != nil {
			l.mu.Unlock()
			return
		}
		seq := l.mu.nextSeq
		l.mu.nextSeq++
		var from string
		if n := len(l.mu.pool); n > 0 {
			from = l.mu.pool[n-1]
			l.mu.pool = l.mu.pool[:n-1]
		}
		l.mu.Unlock()

		r, err := l.prepare(seq, from)
		if err != nil {
			l.fail(err)
			return
		}
		l.mu.Lock()
		l.mu.ready = append(l.mu.ready, r)
		l.readyCond.Signal()
		l.mu.Unlock()
	}
}

// prepare makes segment seq ready: by renaming the unused full-size file
// from, or by writing a new zero-filled one.
func (l *Log) prepare(seq uint64, from string) (readySegment, error) {
	name := segmentName(seq)
	task := "preparing segment " + name
	if from != "" {
		return l.recycle(task+" from spare "+from, l.path(from), seq)
	}
	tmp := l.path(name[:len(name)-len(segmentSuffix)] + tmpSuffix)
	f, err := l.fs.Create(tmp)
	if err != nil {
		return readySegment{}, ioFailure(task, "create", tmp, err)
	}
	for off := int64(0); off < l.opts.SegmentBytes; off += int64(len(zeroBlock)) {
		n := min(int64(len(zeroBlock)), l.opts.SegmentBytes-off)
		if _, err := f.WriteAt(zeroBlock[:n], off); err != nil {
			_ = f.Close()
			return readySegment{}, ioFailure(task, "zero-fill", tmp, err)
		}
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return readySegment{}, ioFailure(task, "fsync", tmp, err)
	}
	if err := l.fs.Rename(tmp, l.path(name)); err != nil {
		_ = f.Close()
		return readySegment{}, ioFailure(task, "rename", tmp, err)
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		_ = f.Close()
		return readySegment{}, ioFailure(task, "directory fsync", l.dir, err)
	}
	l.counters.created.Add(1)
	return readySegment{seq: seq, name: name, f: f}, nil
}

// recycle renames the synced, full-size file at path to segment seq and
// opens it. Its old frames carry another sequence number in their checksum
// and can never validate under the new name. task names the job for errors.
func (l *Log) recycle(task, path string, seq uint64) (readySegment, error) {
	name := segmentName(seq)
	if err := l.fs.Rename(path, l.path(name)); err != nil {
		return readySegment{}, ioFailure(task, "rename", path, err)
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return readySegment{}, ioFailure(task, "directory fsync", l.dir, err)
	}
	f, err := l.fs.Open(l.path(name))
	if err != nil {
		return readySegment{}, ioFailure(task, "open", name, err)
	}
	l.counters.recycled.Add(1)
	return readySegment{seq: seq, name: name, f: f}, nil
}

// Retire tells the log that records below lowest are no longer needed.
// Segments holding only such records are recycled (while fewer than
// SegmentsAhead are ready) or deleted, oldest first, each followed by a
// directory fsync, so a crash leaves a contiguous log. The segment being
// written is never retired, and neither is one whose successor's header is
// not yet durable, so LSNs never restart after a crash.
//
// Retire does I/O (rename or unlink plus a directory fsync per segment,
// ~16 ms on a disk mounted with discard): call it off the commit path. An
// I/O failure here fails the log like any other.
func (l *Log) Retire(lowest LSN) error {
	l.retireMu.Lock()
	defer l.retireMu.Unlock()
	l.mu.Lock()
	if l.mu.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	if err := l.mu.err; err != nil {
		l.mu.Unlock()
		return err
	}
	n := 0
	for n+1 < len(l.mu.live) && l.mu.live[n+1].first <= lowest && l.mu.live[n+1].durable {
		n++
	}
	retirees := slices.Clone(l.mu.live[:n])
	l.mu.live = slices.Delete(l.mu.live, 0, n)
	l.mu.Unlock()

	for _, s := range retirees {
		if err := l.retire(s); err != nil {
			l.fail(err)
			return err
		}
	}
	return nil
}

// retire removes one retired segment from the log's namespace.
func (l *Log) retire(s *segment) error {
	l.mu.Lock()
	reuse := len(l.mu.ready) < l.opts.SegmentsAhead && s.size == l.opts.SegmentBytes && !l.mu.stopPrepare
	var seq uint64
	if reuse {
		seq = l.mu.nextSeq
		l.mu.nextSeq++
	}
	l.mu.Unlock()
	if reuse {
		r, err := l.recycle("recycling retired segment "+s.name+" as "+segmentName(seq), l.path(s.name), seq)
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.mu.ready = append(l.mu.ready, r)
		l.readyCond.Signal()
		l.mu.Unlock()
		return nil
	}
	if err := l.fs.Remove(l.path(s.name)); err != nil {
		return ioFailure("retiring segment "+s.name, "remove", s.name, err)
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return ioFailure("retiring segment "+s.name, "directory fsync", l.dir, err)
	}
	l.counters.removed.Add(1)
	return nil
}

// String describes a segment for error messages.
func (s *segment) String() string { return fmt.Sprintf("%s (first LSN %d)", s.name, s.first) }
