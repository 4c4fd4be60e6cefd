// Package remote is a participant resource that forwards the protocol to
// a data service which keeps its prepared work durably itself and answers
// blocking calls: an HTTP service in any language (participant/httpres),
// or Go code in the same process (embed). The service implements Service:
// Prepare, Commit, Abort and Prepared, each idempotent by transaction id.
//
// The participant runs its engine machine in its ordinary log mode: its
// own log holds RecPrepared before the YES vote and RecCommitted before
// the ack, exactly as for the bank. What this package adds:
//
//   - Prepare never blocks the pump. It starts the call on a goroutine of
//     its own and answers engine.VotePending; the service's answer comes
//     back as an engine.MsgResPrepared through the function given to
//     Attach. An error, an answer the package cannot read, or no answer
//     within Options.PrepareTimeout is a NO vote — and, since the service
//     may have prepared all the same, an abort is sent for it.
//   - Commit and Abort never block either: they queue a delivery, which a
//     goroutine sends until the service answers success, with a capped
//     exponential backoff between attempts. The deliveries not yet
//     answered are the resource's state: Snapshot writes them into the
//     participant's checkpoints, so a crash never loses one.
//   - A YES this participant never recorded (it died between the
//     service's answer and its RecPrepared becoming durable) is settled
//     by asking the service what it holds prepared (Prepared): at start,
//     and then every Options.ScanEvery. A transaction the service holds
//     that the participant neither holds prepared, nor is calling about,
//     nor has a decision for, never had a YES vote leave this
//     participant — the vote waits for the durable record — so no
//     coordinator can have decided to commit it, and it is aborted.
//     docs/http-participant.md says why this, and not a record written
//     before each call, was chosen.
//   - After a restart, the decisions replayed from the log (RecCommitted,
//     RecAborted, and the deliveries in the last checkpoint) are held
//     back until the first scan: those the service no longer holds
//     prepared were delivered before the crash and are dropped; the rest
//     are sent. So a restart does not resend every decision since the
//     last checkpoint.
//
// A commit is sent only for a transaction the service voted YES on: the
// engine commits only what it holds prepared, and it holds only what
// this package reported YES.
package remote
