// Package engine holds the protocol logic of two-phase commit as deterministic
// state machines: a coordinator Shard and a Participant. Inputs (messages,
// ticks, "durable up to index i") go in; outputs (log records, messages,
// client replies) come out as plain data in a Ready. Nothing in this package
// touches a socket, a file, a clock or a goroutine, so a seeded simulation can
// drive the whole protocol.
package engine
