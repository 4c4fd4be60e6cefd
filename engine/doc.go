// Package engine holds the protocol logic of presumed-abort two-phase commit
// as deterministic state machines: a coordinator Shard and a Participant.
// Inputs (messages, ticks, "durable up to index i") go in; outputs (log
// records, messages, client replies, applied decisions) come out as plain
// data in a Ready. Nothing in this package touches a socket, a file, a clock,
// a goroutine or a global random source, so a seeded simulation can drive
// the whole protocol (sim_test.go) and golden scripts can show it step by
// step (testdata/*.txt). docs/protocol.md describes the protocol itself.
//
// # Driving a machine
//
// One goroutine owns a machine (and, for a participant, its Resource) and
// pumps it; it decides nothing itself:
//
//	// At startup, before anything else: every record the log kept, in order.
//	for _, r := range recordsFromLog {
//		if err := m.Restore(r); err != nil {
//			return err // not this machine's log: refuse to start
//		}
//	}
//	for {
//		select {
//		case msg := <-incoming:
//			m.Step(msg)
//		case <-ticker.C:
//			m.Tick()
//		case idx := <-logSynced: // the log made records up to idx durable
//			m.Durable(idx)
//		}
//		for m.HasReady() {
//			rd := m.Ready()
//			// 1. Append rd.Records to the log; Records[i] has index
//			//    rd.FirstIndex+i. Encode them now (Record.AppendBinary):
//			//    the slices are reused after the next call into m.
//			// 2. Send rd.Messages, answer rd.Replies. They are already
//			//    held back until what they depend on is durable, so they
//			//    may go out at once, before the records just appended
//			//    are synced.
//			// 3. Report rd.Applied; let the log drop records below
//			//    rd.LowWater.
//		}
//	}
//
// The caller syncs the log when it likes (group commit) and reports the
// result with Durable. An fsync error must stop the process: Durable is
// never called for records that did not reach the disk.
//
// # Resources that wait for a server
//
// A Resource is called on the driving goroutine and must not block. One
// that needs a round trip answers Prepare with VotePending and later hands
// its answer to the driver as a MsgResPrepared message, which the driver
// Steps like any input. With ParticipantConfig.DurableResource the
// resource (a database's PREPARE TRANSACTION) keeps the prepared and
// committed state itself: the machine writes no records, waits for
// MsgResFinished before acknowledging, and learns after a restart what is
// in doubt from MsgResInDoubt (the resource's scan). docs/protocol.md
// says why that is safe.
//
// # Failures
//
// Network junk (duplicate, late, reordered, unknown messages) is ignored
// and counted in ShardStats / ParticipantStats, never trusted. Operating
// errors are error values (ErrBadRecord). Programmer errors — an impossible
// transition, Durable beyond what was appended, Restore after other input —
// panic with the broken invariant.
//
// # Routing
//
// A coordinator runs several shards; ShardFor routes every message about a
// transaction to the shard that owns it. Shards share no state.
package engine
