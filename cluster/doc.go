// Package cluster is the map of a commitd cluster of several coordinator
// groups (docs/scale.md): which groups exist, their replicas' addresses,
// which share of the new transactions each takes, and the participants
// every group may use.
//
// A transaction's owning group is stamped in its id — the 12 bits of a
// UUIDv7's rand_a — so a map says only where new transactions go and
// where each group's replicas are; it never moves an old transaction, and
// nothing on a recovery path looks anything up but the group's addresses.
//
// The package reads no files but the one Load is given, opens no sockets
// and keeps no clocks: Pick takes its random number from the caller.
package cluster
