// Package postgres is a participant resource that keeps its accounts in a
// PostgreSQL database and uses PostgreSQL's own two-phase commit: a
// branch is an UPDATE of one account (a CHECK constraint refuses to take
// it below zero) in a transaction that is then made durable with PREPARE
// TRANSACTION 'commitd:NAME:UUID'; the decision is COMMIT PREPARED or
// ROLLBACK PREPARED.
//
// PostgreSQL makes the prepared and the committed state durable itself,
// so the participant runs its engine machine in durable-resource mode
// (engine.ParticipantConfig.DurableResource) and forces nothing into its
// own log. Every round trip runs on a goroutine of its own, bounded by the
// connection pool, and reports back as an engine message (MsgResPrepared,
// MsgResFinished, MsgResFailed) through the function given to Attach, so
// the participant's single pump goroutine never waits for the database.
// InDoubt lists pg_prepared_xacts with this participant's prefix: at
// start and periodically the participant resolves each by asking the
// coordinator, so no prepared transaction is left holding locks.
//
// Tables (created when missing):
//
//	commitd_accounts  (id integer PRIMARY KEY, balance bigint CHECK (balance >= 0))
//	commitd_decisions (participant text, txn uuid, committed boolean)
//	commitd_prevented (participant text, txn uuid, at timestamptz)
//
// commitd_decisions holds a marker per decided transaction — inserted in
// the prepared transaction itself for a commit, after the rollback for an
// abort — until the participant's ledger has the decision durably
// (Forget). It makes COMMIT PREPARED idempotent without guessing: an id
// PostgreSQL no longer knows is committed only if its marker says so.
//
// The resource can prevent (engine.Preventer), so PostgreSQL participants
// take part in staged decisions: Prevent inserts the marker (committed
// false) with a commitd_prevented row that keeps it, and the marker's
// primary key is the compare-and-swap against a prepare (see Prevent).
//
// docs/postgres.md says how to set PostgreSQL up; docs/protocol.md why
// skipping the participant's own forced records is safe.
package postgres
