// Package waltest provides a crashable in-memory file system and error
// injection for testing code built on package wal.
package waltest
