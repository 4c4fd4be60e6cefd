package coordinator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
)

// outcomeIndex is the coordinator's durable, bounded memory of how its
// transactions ended, for `commitd admin txn` and client.Outcome long
// after the shards have forgotten them (Config.Remember, 5 s). It lives in
// a log of its own (<data>/outcomes), kept for Config.OutcomeRetention and
// at most Config.OutcomeMaxBytes of entries, and it is fed from what the
// servers already see:
//
//   - every reply a shard hands out (committed, with the participants that
//     voted yes; aborted, with the cause and the participant; unknown) —
//     on the pump goroutine, by appending a few dozen bytes to a buffer
//     under a mutex: nothing on the commit path waits for the index;
//   - every commit record the coordinator's log holds at recovery, and,
//     replicated, every commit record a replica applies from raft — so
//     committed is answered from committed state on every replica.
//
// # Durability: what the log proves
//
// Entries are collected in memory and appended in bulk (sync: every
// second, and whenever maxPending bytes wait), as the participant's
// ledger does, so the index adds no fdatasync stream to the commit path.
// What a crash can cost and why it costs no acknowledged commit:
//
//   - A 2PC commit was acknowledged only once its commit record was
//     durable in the coordinator's log, and that log retires a record only
//     after the index was synced (the retirer's BeforeRetire; a replica
//     syncs it before compacting its raft log): either the index has the
//     entry on disk, or the log still has the record and recovery records
//     it again. A kill -9 keeps the page cache, so even the entries not
//     yet synced survive it; only a machine crash loses them.
//   - An abort has no record (presumed abort), nor has a one-phase or
//     read-only commit: an entry of theirs lost to a machine crash in the
//     second before its sync is simply absent, and the answer is
//     not-found, never a guess.
//
// # Lookups
//
// Ids are UUIDv7: their first 48 bits are a time, and a coordinator
// accepts an id only within seconds of it, so entries sit in the log
// near the time of their id. Each log record holds a block of entries,
// and memory keeps, per record, the smallest and largest id time in it
// (a span): a lookup reads only the records whose span covers the id's
// time — a second or two of entries — however long the index is.
// Memory holds the spans (24 bytes per block of up to blockBytes), the
// pending entries and nothing per transaction.
//
// # Retention
//
// Once a second retire drops the oldest spans whose ids are all older
// than the retention, and the oldest beyond OutcomeMaxBytes, and retires
// the log's segments below what is kept. Before it does, it records a
// horizon — "no id older than this is sure to be answered" — and syncs
// it: an id older than the horizon that is not found is expired, one
// younger not found. A fresh index starts its horizon at its creation.
type outcomeIndex struct {
	log        *wal.Log // immutable
	retention  time.Duration
	maxBytes   int64
	maxPending int              // bytes; immutable after open (tests lower it)
	block      int              // most bytes of entries in one log record; immutable
	now        func() time.Time // tests replace it

	mu struct {
		sync.Mutex
		pending []byte // whole entries, not yet appended
		err     error  // the first failed append, for sync to return
	}

	// appendMu orders appends, so entries reach the log in record order;
	// spare is the buffer swapped in for pending.
	appendMu sync.Mutex
	spare    []byte

	// reading is held shared while records are read back (lookups), and
	// exclusively by retire, which skips a round rather than wait.
	reading sync.RWMutex

	spansMu sync.Mutex
	spans   []span // one per log record still kept, in LSN order
	bytes   int64  // entry bytes in spans

	// horizonMs: ids whose time (Unix ms) is below it may have been
	// forgotten. Written by open and retire, read by lookups.
	horizonMs atomic.Int64
}

// span is what memory keeps of one log record of the index: where it is,
// the range of the id times of its entries, and its size.
type span struct {
	lsn          wal.LSN
	minMs, maxMs int64
	bytes        int64
}

// Entry kinds. An entry is
//
//	kind u8 | txn [16] | at i64 (Unix ms, little endian) | cause u8 | n u8 | n × (len u8 | name)
//
// and a log record is one or more entries back to back. A horizon entry
// has a zero txn and the horizon in at.
const (
	entryCommitted = 1 + iota
	entryAborted
	entryUnknown
	entryHorizon
)

const (
	entryHeaderLen = 1 + 16 + 8 + 1 + 1
	// blockBytes bounds one log record of entries: a lookup reads whole
	// records, so this is also about what one costs beyond the first.
	blockBytes = 64 << 10
	// defaultOutcomePending is how many bytes of entries wait in memory
	// before a record's append takes them without waiting for the second's
	// sync: a block.
	defaultOutcomePending = blockBytes
	// minOutcomeSegmentBytes is the smallest segment the index uses: it
	// holds records of a few entries at least.
	minOutcomeSegmentBytes = 16 << 10
)

// outcomeSegmentBytes is the index's segment size for the coordinator's
// segment size seg (0: the default): a quarter of it, as the
// participant's ledger, since nothing waits on the index's writes.
func outcomeSegmentBytes(seg int64) int64 {
	if seg <= 0 {
		seg = wal.DefaultSegmentBytes
	}
	return max(seg/4, minOutcomeSegmentBytes)
}

// DefaultOutcomeRetention and DefaultOutcomeMaxBytes are the index's
// default bounds: a day of answers, at most 1 GiB of entries. An entry of
// a two-participant transaction takes about 33 bytes, so 1 GiB holds some
// 30 million transactions — a day at 370 transactions/s, 17 minutes at
// 30,000/s; whichever bound is reached first applies (docs/operations.md).
const (
	DefaultOutcomeRetention = 24 * time.Hour
	DefaultOutcomeMaxBytes  = 1 << 30
)

// openOutcomes opens the index in dir and reads it once to rebuild its
// spans and horizon (a corrupt entry refuses to start). On a fresh
// directory the horizon is now.
func openOutcomes(dir string, opts wal.Options, retention time.Duration, maxBytes int64) (*outcomeIndex, error) {
	log, err := wal.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("outcome index: %w", err)
	}
	block := blockBytes
	for wal.SegmentBytesFor(block) > opts.SegmentBytes && block > 1024 {
		block /= 2 // small test segments
	}
	x := &outcomeIndex{log: log, retention: retention, maxBytes: maxBytes, maxPending: defaultOutcomePending, block: block, now: time.Now}
	horizon := int64(-1)
	first := log.Stats().FirstLSN
	if first != 0 {
		err = log.Replay(first, func(lsn wal.LSN, data []byte) error {
			sp := span{lsn: lsn, minMs: 1<<63 - 1, maxMs: -1 << 63, bytes: int64(len(data))}
			err := eachEntry(lsn, data, func(e *outcomeEntry) {
				if e.kind == entryHorizon {
					horizon = max(horizon, e.atMs)
					return
				}
				ms := idMs(e.txn)
				sp.minMs, sp.maxMs = min(sp.minMs, ms), max(sp.maxMs, ms)
			})
			if err != nil {
				return err
			}
			if sp.maxMs >= sp.minMs {
				x.spans = append(x.spans, sp)
				x.bytes += sp.bytes
			}
			return nil
		})
		if err != nil {
			_ = log.Close()
			return nil, fmt.Errorf("outcome index: %w", err)
		}
	}
	if horizon < 0 {
		// A new index (or one whose horizon entries were all retired,
		// which retire never does): it knows nothing older than now.
		horizon = x.now().UnixMilli()
		x.recordHorizon(horizon)
		if err := x.sync(); err != nil {
			_ = log.Close()
			return nil, err
		}
	}
	x.horizonMs.Store(horizon)
	return x, nil
}

// outcomeEntry is one decoded entry; names alias the record.
type outcomeEntry struct {
	kind  byte
	txn   protocol.TxnID
	atMs  int64
	cause protocol.Cause
	names [protocol.MaxBranches][]byte
	n     int
}

// eachEntry decodes the entries of one record, calling fn for each; a
// malformed one is corruption.
func eachEntry(lsn wal.LSN, data []byte, fn func(*outcomeEntry)) error {
	var e outcomeEntry
	bad := func(why string) error {
		return fmt.Errorf("record at LSN %d: %s: %w", lsn, why, wal.ErrCorrupt)
	}
	for len(data) > 0 {
		if len(data) < entryHeaderLen {
			return bad("entry truncated")
		}
		e.kind = data[0]
		copy(e.txn[:], data[1:17])
		e.atMs = int64(binary.LittleEndian.Uint64(data[17:25]))
		e.cause = protocol.Cause(data[25])
		e.n = int(data[26])
		if e.kind < entryCommitted || e.kind > entryHorizon || !e.cause.Valid() || e.n > protocol.MaxBranches {
			return bad(fmt.Sprintf("entry kind %d, cause %d, %d names", e.kind, e.cause, e.n))
		}
		data = data[entryHeaderLen:]
		for i := range e.n {
			if len(data) < 1 || len(data) < 1+int(data[0]) || data[0] > protocol.MaxNameLen {
				return bad("name truncated")
			}
			e.names[i] = data[1 : 1+int(data[0])]
			data = data[1+int(data[0]):]
		}
		fn(&e)
	}
	return nil
}

// idMs is the time of a UUIDv7 id in Unix ms (its first 48 bits); every
// id a coordinator accepted is one.
func idMs(id protocol.TxnID) int64 { return int64(binary.BigEndian.Uint64(id[:8]) >> 16) }

// appendEntry encodes one entry onto dst.
func appendEntry(dst []byte, kind byte, id protocol.TxnID, atMs int64, cause protocol.Cause, names ...string) []byte {
	dst = append(dst, kind)
	dst = append(dst, id[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(atMs))
	dst = append(dst, byte(cause), byte(len(names)))
	for _, n := range names {
		dst = append(dst, byte(len(n)))
		dst = append(dst, n...)
	}
	return dst
}

// recordReply notes the outcome a shard told a client (rejections are not
// outcomes: nothing began). It runs on a pump goroutine, never waits for
// I/O unless a block's worth is pending, and reports no error: a failed
// append is kept for the next sync, which stops the server.
//
// now is the time to record (Unix ms): the caller reads the clock once
// for a whole Ready's replies.
func (x *outcomeIndex) recordReply(r *engine.Reply, now int64) {
	x.mu.Lock()
	switch r.Outcome {
	case protocol.OutcomeCommitted:
		x.mu.pending = appendEntry(x.mu.pending, entryCommitted, r.Txn, now, 0, r.Participants...)
	case protocol.OutcomeAborted:
		if r.Participant != "" {
			x.mu.pending = appendEntry(x.mu.pending, entryAborted, r.Txn, now, r.Cause, r.Participant)
		} else {
			x.mu.pending = appendEntry(x.mu.pending, entryAborted, r.Txn, now, r.Cause)
		}
	case protocol.OutcomeUnknown:
		x.mu.pending = appendEntry(x.mu.pending, entryUnknown, r.Txn, now, 0)
	default:
		x.mu.Unlock()
		return
	}
	x.afterRecord()
}

// recordCommit notes a commit record read back from the coordinator's log
// (recovery) or applied from raft.
func (x *outcomeIndex) recordCommit(id protocol.TxnID, participants []string) {
	x.mu.Lock()
	x.mu.pending = appendEntry(x.mu.pending, entryCommitted, id, x.now().UnixMilli(), 0, participants...)
	x.afterRecord()
}

func (x *outcomeIndex) recordHorizon(ms int64) {
	x.mu.Lock()
	x.mu.pending = appendEntry(x.mu.pending, entryHorizon, protocol.TxnID{}, ms, 0)
	x.afterRecord()
}

// afterRecord unlocks mu, appending what is pending if a block's worth is.
func (x *outcomeIndex) afterRecord() {
	full := len(x.mu.pending) >= x.maxPending
	x.mu.Unlock()
	if full {
		if err := x.appendPending(); err != nil {
			x.mu.Lock()
			if x.mu.err == nil {
				x.mu.err = err
			}
			x.mu.Unlock()
		}
	}
}

// appendPending appends the entries recorded so far, in blocks, without
// waiting for durability, and adds a span per block.
func (x *outcomeIndex) appendPending() error {
	x.appendMu.Lock()
	defer x.appendMu.Unlock()
	x.mu.Lock()
	batch := x.mu.pending
	x.mu.pending = x.spare[:0]
	x.mu.Unlock()
	for off := 0; off < len(batch); {
		// Whole entries, up to blockBytes (at least one).
		end := off
		sp := span{minMs: 1<<63 - 1, maxMs: -1 << 63}
		for end < len(batch) {
			n := entryLen(batch[end:])
			if end > off && end+n-off > x.block {
				break
			}
			if batch[end] != entryHorizon {
				var id protocol.TxnID
				copy(id[:], batch[end+1:end+17])
				ms := idMs(id)
				sp.minMs, sp.maxMs = min(sp.minMs, ms), max(sp.maxMs, ms)
			}
			end += n
		}
		lsn, err := x.log.AppendLazy(batch[off:end])
		if err != nil {
			return fmt.Errorf("outcome index: %w", err)
		}
		if sp.maxMs >= sp.minMs {
			sp.lsn, sp.bytes = lsn, int64(end-off)
			x.spansMu.Lock()
			x.spans = append(x.spans, sp)
			x.bytes += sp.bytes
			x.spansMu.Unlock()
		}
		off = end
	}
	x.spare = batch[:0]
	return nil
}

// entryLen is the length of the well-formed entry at the start of b (one
// this process encoded).
func entryLen(b []byte) int {
	n := entryHeaderLen
	for range int(b[26]) {
		n += 1 + int(b[n])
	}
	return n
}

// sync makes every entry recorded before the call durable.
func (x *outcomeIndex) sync() error {
	if err := x.appendPending(); err != nil {
		return err
	}
	x.mu.Lock()
	err := x.mu.err
	x.mu.Unlock()
	if err != nil {
		return err
	}
	if err := x.log.Sync(x.log.LastLSN()); err != nil {
		return fmt.Errorf("outcome index: %w", err)
	}
	return nil
}

// errFound stops a replay once the record wanted has been read.
var errFound = errors.New("found")

// lookup returns what the index holds of id: its last entry (a commit
// entry outranks any other: it alone is backed by a durable decision), and
// whether there is one. It syncs first, so it sees every entry recorded
// before the call.
func (x *outcomeIndex) lookup(id protocol.TxnID) (outcomeEntry, bool, error) {
	var found outcomeEntry
	ok := false
	if err := x.sync(); err != nil {
		return found, false, err
	}
	ms := idMs(id)
	x.spansMu.Lock()
	var lsns []wal.LSN
	for _, sp := range x.spans {
		if sp.minMs <= ms && ms <= sp.maxMs {
			lsns = append(lsns, sp.lsn)
		}
	}
	x.spansMu.Unlock()
	x.reading.RLock()
	defer x.reading.RUnlock()
	for _, want := range lsns {
		err := x.log.Replay(want, func(lsn wal.LSN, data []byte) error {
			err := eachEntry(lsn, data, func(e *outcomeEntry) {
				if e.txn != id || e.kind == entryHorizon {
					return
				}
				if !ok || found.kind != entryCommitted {
					found, ok = *e, true
					// The names alias the record: copy them out.
					for i := range e.n {
						found.names[i] = append([]byte(nil), e.names[i]...)
					}
				}
			})
			if err != nil {
				return err
			}
			return errFound
		})
		if errors.Is(err, wal.ErrRetired) {
			continue // retired since the spans were read: expired
		}
		if err != nil && !errors.Is(err, errFound) {
			return found, false, fmt.Errorf("outcome index: %w", err)
		}
	}
	return found, ok, nil
}

// horizon is the time of the oldest id the index is sure to answer for.
func (x *outcomeIndex) horizon() time.Time { return time.UnixMilli(x.horizonMs.Load()) }

// retire drops the spans beyond the retention or the size cap, records
// and syncs the new horizon, and retires the log's segments below what is
// kept. It runs once a second, off the commit path; while a lookup reads
// it does nothing (the next round retires).
func (x *outcomeIndex) retire() error {
	if !x.reading.TryLock() {
		return nil
	}
	defer x.reading.Unlock()
	cutoff := x.now().Add(-x.retention).UnixMilli()
	durable := x.log.DurableLSN()
	x.spansMu.Lock()
	n, bytes, horizon := 0, x.bytes, x.horizonMs.Load()
	// Keep the newest span: its LSN is where the log is cut.
	for n < len(x.spans)-1 {
		sp := x.spans[n]
		if sp.lsn > durable || sp.maxMs >= cutoff && bytes <= x.maxBytes {
			break
		}
		bytes -= sp.bytes
		horizon = max(horizon, sp.maxMs+1)
		n++
	}
	var below wal.LSN
	if n > 0 {
		below = x.spans[n].lsn
	}
	x.spansMu.Unlock()
	if n == 0 {
		return nil
	}
	// The horizon first: a crash after the segments are gone must not
	// answer not-found for what was forgotten.
	x.recordHorizon(horizon)
	if err := x.sync(); err != nil {
		return err
	}
	x.horizonMs.Store(horizon)
	x.spansMu.Lock()
	for _, sp := range x.spans[:n] {
		x.bytes -= sp.bytes
	}
	x.spans = append(x.spans[:0], x.spans[n:]...)
	x.spansMu.Unlock()
	if err := x.log.Retire(below); err != nil {
		return fmt.Errorf("outcome index: %w", err)
	}
	return nil
}

func (x *outcomeIndex) close() error {
	err := x.sync()
	return errors.Join(err, x.log.Close())
}
