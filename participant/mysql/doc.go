// Package mysql is a participant resource that keeps its state in a
// MySQL or MariaDB database and uses the server's XA two-phase commit: a
// branch runs in an XA transaction on a connection of its own (XA START,
// the work, a commit marker, XA END, XA PREPARE), and the decision is
// XA COMMIT or XA ROLLBACK.
//
// The work is the bank's (add an amount to an account of
// commitd_accounts, refused below zero) or, with Config.Statements, a
// statement of the operator's file (participant/statements) run with its
// arguments as bind parameters.
//
// Transaction ids map to XIDs deterministically:
//
//	formatID = 1668117604 (0x636d7464, "cmtd")
//	gtrid    = the transaction's UUID in its 36-byte text form
//	bqual    = the participant's name (1..64 bytes of A-Z a-z 0-9 . _ -)
//
// so `XA COMMIT '<uuid>','<name>',1668117604` finishes one by hand, and
// XA RECOVER rows with this formatID and bqual are this participant's
// (two participants may share a server).
//
// MySQL and MariaDB tie a prepared XA transaction to the session that
// prepared it for as long as that session lives: XA COMMIT from another
// session fails with XAER_NOTA (1397) meanwhile. So the branch's
// connection is kept, pinned to the transaction, until its decision,
// which runs on it; only after a restart (or once that connection has
// broken, and its session is killed) does a decision run from another
// session. Prepared XA transactions outlive their session and a server
// restart (MySQL ≥ 5.7.7, MariaDB ≥ 10.5; Open refuses older servers).
//
// As in participant/postgres, the resource is durable
// (participant.Durable): the server holds the prepared and committed
// state, the participant's own log stays empty, and a table
// (commitd_decisions) holds a marker per decided transaction — written in
// the XA transaction for a commit, after the rollback for an abort —
// until the participant's ledger has it. The resource can prevent
// (engine.Preventer: a marker with committed FALSE and a
// commitd_prevented row, the marker's primary key the compare-and-swap
// against a branch), so its transactions run staged. Every round trip
// runs on a goroutine of its own and reports back through the function
// given to Attach.
//
// docs/mysql.md says how to set the server up and what happens on each
// failure.
package mysql
