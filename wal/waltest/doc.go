// Package waltest provides a crashable in-memory file system and error
// injection for testing code built on package wal.
//
// MemFS tracks, per file, what was synced and what was only written, and
// per directory, which names were made durable by SyncDir. Crash freezes the
// running file system (every later operation fails with ErrCrashed, as if
// the machine stopped) and returns what a reboot would find: durable names,
// synced contents, and — chosen by a seeded rand — a prefix of each file's
// unsynced writes in order, possibly ending in a torn write followed by
// garbage. A real `kill -9` keeps the page cache and so cannot catch a
// missing fsync; this can.
//
// Inject installs a hook run before every operation: it can fail it (any
// error; ErrNoSpace for a full disk; FailNth for the nth create, write,
// sync, rename, ...), block it to hold a goroutine inside a window, or
// Crash the file system at that exact operation.
package waltest
