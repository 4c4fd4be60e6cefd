// Package node is the lifecycle that the coordinator and the participant
// servers share: starting their goroutines (pumps, the connection server,
// the log retirer), stopping on Close or on a fatal error, and releasing
// what they hold in an order that loses nothing.
//
// It exists so that the rules live in one place rather than in two copies
// that drift: a failed write or fsync stops the server and is reported by
// Err (never retried); the listener closes first and the data directory's
// lock is released last; the log closes only after every pump that appends
// to it has stopped; segments are retired only below what every pump still
// needs, and only after the server's own BeforeRetire (the participant's
// ledger sync) has succeeded.
//
// It knows no protocol: what a server does between Start and Close stays in
// its own package.
package node
