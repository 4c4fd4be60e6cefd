// Package participant is the participant server: it joins the engine's
// participant machine, a Resource, the write-ahead log and the network.
//
// One pump goroutine (internal/pump) owns the engine.Participant and drives
// the resource through it; the resource sits behind a small lock only so
// that admin reports can read it from other goroutines. Prepares and
// decisions arrive on connections the coordinator dials in; votes, acks
// and inquiries leave on connections this server dials to the coordinator.
// Starting, stopping and failing (an fsync error stops the server, never a
// retry) are internal/node's, shared with the coordinator.
//
// Two logs live in the data directory. The protocol log (wal/) holds
// prepared, committed, aborted and checkpoint records and is retired below
// the machine's low water. The ledger (ledger/) holds one 17-byte entry per
// decision applied, is synced before every retirement of the protocol
// log, so that no decision drops out of both, and keeps each decision for
// Config.LedgerRetention (see ledger for when a segment may go).
// The ledger is the participant's answer to `commitd admin outcomes`, which
// streams it from disk: its memory does not grow with it (see ledger).
//
// A Durable resource (participant/postgres) keeps its own prepared and
// committed state: the server then forces nothing into the protocol log,
// and reconciles the ledger with what the resource remembers at start.
// A Forwarding resource (participant/remote: an HTTP service, or Go code
// through embed) is kept durable by the protocol log like the bank, but
// answers prepares later: the server attaches it once recovery is done,
// so that its votes come back through the pump.
package participant
