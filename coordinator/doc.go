// Package coordinator is the coordinator server: it joins engine shards, the
// write-ahead log and the network.
//
// A transaction belongs to shard engine.ShardFor(id, Shards); each shard is
// an engine.Shard owned by one pump goroutine (internal/pump), and every
// shard appends to one shared log, so that one fdatasync covers them all.
// The front door (one reader goroutine per connection) admits clients'
// Begins — rejecting, with a reason, what names a participant the
// coordinator does not know — and routes participants' votes, acks and
// inquiries to the owning shard; well-formed frames that make no sense here
// are answered with an error or dropped and counted, a malformed one closes
// its connection. Prepares and decisions go out on connections the
// coordinator dials to each participant (mux.Peer), each shard keeping to
// one of them so that its batch leaves in one write.
//
// Commit decisions are logged; acknowledgements are not. After a restart
// the shards replay the log, and every commit not yet ended is delivered
// again to all its participants until each acknowledges. Starting,
// stopping, retiring log segments and failing (an fsync error stops the
// server, never a retry) are internal/node's, shared with the participant.
package coordinator
