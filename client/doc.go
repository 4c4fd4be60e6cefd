// Package client is the Go client of a commitd coordinator: one call runs a
// whole transaction in one round trip.
//
// A Client keeps a few multiplexed connections to the coordinator (Options.Conns)
// and pipelines the calls of thousands of concurrent callers over them;
// it reconnects by itself. Run returns the transaction's outcome, or Unknown
// with an error when the answer was lost: the transaction may or may not
// have committed. Nothing is guessed; ask later with Outcome, which the
// coordinator answers from its outcome index for a day by default
// (committed, aborted with the cause, in flight, or no record:
// docs/operations.md).
//
// Every transaction needs a new id: a UUIDv7 (uuid.NewV7), made just
// before Run and never reused, not even to retry after Unknown. The
// coordinator checks an id's time against what it can still remember and
// rejects a stale one (protocol.CauseStaleID): see Client.Run.
//
// Run allocates nothing for a committed transaction once its pools are
// warm (the request is encoded from pooled scratch, the reply decoded into
// it), so that a load generator measures the system, not the client.
// Package clienttest has a stand-in coordinator for tests and benchmarks.
package client
