// Package wal is a segmented, append-only, checksummed write-ahead log with
// group commit. It knows nothing of transactions.
package wal
