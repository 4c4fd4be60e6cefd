// Package datadir guards a server's data directory: one process at a time
// (Acquire takes a flock on its LOCK file), and, before a server starts, room
// on its disk for the log segments it will write at once (CheckSpace).
//
// It knows no transactions and no log format; both servers use it.
package datadir
