// Package protocol is commitd's vocabulary: the names of the two-phase-commit
// protocol that every layer speaks — the transaction id, votes, decisions,
// outcomes, abort causes and the limits on a transaction's size.
//
// It plays the role raftpb plays for etcd's raft: a leaf that imports no
// other package of the module, imported by the engine (the protocol's
// state machines), by net/wire (which encodes these values as single bytes:
// the numbers here are the wire's, see docs/wire-format.md) and by the
// client, so that a value crosses every layer without a conversion.
//
// Every enum starts at 1, so a zero value is never mistaken for a real one;
// for Cause, zero means "none". Each enum has a String method and, for the
// wire's range checks, a Valid method that says whether a value may be
// sent on the wire.
package protocol
