// Package wal is a segmented, append-only, checksummed write-ahead log with
// group commit. It knows nothing of transactions: a record is a byte slice,
// its position an LSN (1, 2, 3, ... across segments, no gaps).
//
// # Using it
//
//	l, err := wal.Open(dir, wal.Options{})  // recovers; creates dir
//	l.Replay(from, fn)                      // what survived, in order
//	lsn, err := l.Append(rec)               // copies rec, returns at once
//	l.Notify(lsn, w)                        // w.LogDurable(lsn) or w.LogFailed(lsn, err) later, in LSN order
//	err = l.Sync(lsn)                       // or wait, on this goroutine
//	l.Retire(lowest)                        // owner no longer needs records < lowest
//
// A record is durable once Sync returns nil or its Waiter is told so —
// never earlier. Act on a record (send a vote, reply to a client) only then.
//
// # Group commit
//
// Appenders copy frames into one shared buffer under a mutex; nothing is
// allocated per record. A single flusher goroutine swaps that buffer for a
// spare, fills in the checksums, writes the whole batch with one WriteAt
// and one fsync, advances the durable watermark and then completes every
// waiter the batch covered, in LSN order, on its own goroutine. While it
// syncs, the next batch accumulates. There is no batching timer: an idle
// flusher wakes on the first Append, so a lone appender pays one goroutine hand-off
// plus its fsync, and batches grow by themselves with load. Sync parks the
// caller on a pooled channel that only its own completion signals, so 1,000
// waiting goroutines are not all woken per batch. Both queues are bounded:
// appends block while Options.MaxPendingBytes wait for the flusher, and
// registering a waiter (Notify, AppendNotify, AppendSync, Sync) blocks
// while Options.MaxWaiters wait for durability. Options.NoGroupCommit
// writes and fsyncs every record on its own (the baseline for comparisons).
// AppendEach appends a batch of records of one size under one lock (the
// participant's ledger: thousands of small entries at once), with the
// frames and LSNs an Append per record would give.
//
// # Lazy records
//
// AppendLazy is for records nothing waits on urgently (a coordinator's end
// record, a participant's commit record whose acknowledgement may come a
// little late). It does not wake the flusher: the record is written with
// the next batch that something else makes the flusher write (an Append, a
// Sync, an appender waiting for room), and at the latest Options.LazyDelay
// (5 ms) after it was appended, when a timer makes it urgent. Under load
// lazy records cost no fsync of their own; at low load they halve the
// fsyncs of a two-phase commit, which matters because every fdatasync
// flushes the whole device cache and concurrent ones queue behind each
// other. Durability is unchanged: a lazy record is durable exactly when a
// Waiter or Sync says so.
//
// # On disk
//
// A directory of segment files named by a sequence number, %016x.wal, all
// Options.SegmentBytes bytes (64 MiB) long, prepared ahead of need. All
// integers little endian; CRC-32C is Castagnoli.
//
//	segment header, at offset 0 (32 bytes)
//	+----------+---------+-----------+---------+-----------+
//	| magic    | seq     | first LSN | version | CRC-32C   |
//	| 8 bytes  | u64     | u64       | u32 = 1 | of [0,28) |
//	| commitdW |         |           |         |           |
//	+----------+---------+-----------+---------+-----------+
//
//	frame, at offset 32 and then back to back, 8-byte aligned
//	+---------+---------+---------+-----------+-----------------+
//	| CRC-32C | length  | LSN     | data      | zero padding to |
//	| u32     | u32 = n | u64     | n bytes   | a multiple of 8 |
//	+---------+---------+---------+-----------+-----------------+
//	CRC = crc32c(continue from crc32c(seq as u64), bytes [4, 16+n))
//
// The checksum is seeded with the segment's sequence number and covers the
// LSN, so a frame only validates in the file incarnation it was written
// for and only at its place in the sequence: stale bytes in a recycled or
// preallocated file never validate. Sequence numbers are never reused: each
// Open continues in a new segment numbered above every file on disk, so no
// file is ever written in two lives.
//
// # Recovery
//
// Open reads the header of every *.wal file. A file whose header is intact
// and names its own sequence number is a used segment. A file that provably
// never held a record under its name is a spare, recycled under a new name:
// its header is an intact one of an earlier incarnation, or it is damaged
// (zeroes, a crash tearing the first write) and no frame of this segment
// validates anywhere in the file. Any other damaged header is corruption: a
// file that holds or may hold records is never reused or skipped. Used
// segments are ordered by first LSN (then sequence). Every checksum is
// verified:
//   - a segment that is not the last must hold every record up to its
//     successor's first LSN; bytes after that are stale and ignored;
//   - the last is read to its first bad frame. That frame starts the tail,
//     which is cut — left in place, untouched, and never read again (see
//     Recovery; a torn one is logged to Options.Logger with file, offset
//     and bytes dropped) — unless a valid frame of the same segment
//     follows it at any 8-aligned offset.
//
// Any other bad frame is corruption: Open fails with an error wrapping
// ErrCorrupt that names the segment file and offset. Nothing is skipped.
// Open fsyncs the last segment before returning, so records that survived
// a process crash only in the page cache are durable before anyone acts on
// them.
//
// # Segments
//
// The preparer goroutine keeps Options.SegmentsAhead files ready: a new one
// is written full of zeroes as NAME.wal.tmp, fsynced, renamed to NAME.wal,
// and the directory fsynced; an unused spare is renamed and the directory
// fsynced. The commit path never creates, grows or zero-fills a file.
// Retire renames (recycles) or deletes retired segments oldest first, each
// followed by a directory fsync, and never retires a segment whose
// successor's header is not yet durable, so a crash can neither leave a hole
// in the log nor make LSNs restart.
//
// # Failure
//
// A failed write, fsync, create, rename or directory fsync poisons the log:
// the flusher fails every waiter with the error, and every later Append,
// Sync or Notify of a record not yet durable returns it (wrapping ErrFailed
// and the cause; the message says what the log was doing — preparing,
// writing, recycling or retiring which segment — and which operation on
// which file failed, and ENOSPC that the disk is full). Open waits for the
// first segment to be ready, so a disk without room for one fails Open. Nothing retries an fsync:
// after a failed fsync the kernel may have dropped the dirty pages, and a
// retry that succeeds would lie. Restart and recover from disk.
//
// All file access goes through FS; package waltest has a crashable
// in-memory FS with error injection.
package wal
