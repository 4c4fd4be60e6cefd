// Package raftlog keeps a raft replica's durable state — its log entries,
// its HardState and the replica's identity — in a commitd write-ahead log
// (package wal), so that one fdatasync of the WAL's group commit covers a
// whole raft Ready: its entries and its HardState together.
//
// On Open the WAL is replayed into a raft.MemoryStorage, which the raft
// node reads (Config.Storage = Log.Storage()); Save appends a Ready's
// entries and HardState to the WAL, waits until they are durable and only
// then adds them to the MemoryStorage, so the storage raft reads never
// holds what a crash could take away.
//
// # Records
//
// Every record starts with a kind byte; raft's own types are encoded with
// their protobuf codec (raftpb), integers little endian:
//
//	kind 1, entry:      u8 1 | raftpb.Entry
//	kind 2, hard state: u8 2 | raftpb.HardState
//	kind 3, identity:   u8 3 | u64 group | u64 id | u32 n | n × (u64 id, u16 len, addr)
//	                    (n = 0: the replica joined; group 0: not learned yet)
//	kind 4, snapshot received from the leader: u8 4 | raftpb.Snapshot
//	kind 5, snapshot made here (Compact):      u8 5 | raftpb.Snapshot
//
// The identity is the first record of a new log, and is written again
// before every snapshot. A received snapshot (4) replaces every entry; one
// made here (5) the entries up to its index, and is followed by the hard
// state again; after either, the WAL segments holding only what it
// replaced are retired — so entries past a snapshot may precede it in the
// WAL, and replay accepts them there. A replica that bootstrapped its
// group starts after a base snapshot (index 1, term 1, every peer of the
// first configuration a voter), which is not stored: it follows from the
// identity, and entries start at index 2. A replica that joined an
// existing group has no base: its log starts with its leader's snapshot.
// Replay applies raft's rule for rewritten entries: an entry at index i
// discards every entry at or after i recorded before it. The last hard
// state wins.
//
// # Identity and membership
//
// A replica's data directory belongs to one replica (its id) of one group.
// The group id is fixed when the group is bootstrapped (FNV-64a of the
// sorted first configuration, stored in the identity record, never
// recomputed) and learned by a joining replica (Identity.Join) from the
// Members header of its leader's first snapshot. Open refuses a directory
// created for another id, and a directory that bootstrapped a group to a
// replica started to join one, with an error that wraps ErrIdentity and
// names both; Save refuses a snapshot of another group.
//
// The configuration itself is raft's (ConfState, changed by committed
// configuration changes), and the addresses travel with it: a snapshot's
// data starts with a Members header (group id, id → address of every
// member, removed ids), and a change that adds a replica carries its
// address in its Context (AppendAddrs). Once a log holds a configuration,
// it wins over the command line: Members.CheckPeers refuses only a member
// that --peers places at another address, and a replica that was removed
// (ErrRemoved).
package raftlog
