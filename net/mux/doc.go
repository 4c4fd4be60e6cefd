// Package mux multiplexes many pipelined requests and one-way messages over
// one connection, coalescing queued frames into one write.
//
// # Conn
//
// A Conn wraps a net.Conn (plain TCP, or TLS wrapped by the caller) and
// runs two goroutines:
//
//	Send/Reply/Call ──append under mu──▶ queue ──swap──▶ writer ──one write──▶ net.Conn
//	net.Conn ──▶ reader ──wire.Reader──▶ wire.Check ─┬─ reply ──▶ pending call (by request id)
//	                                                  └─ other ──▶ Handler.HandleFrame
//
// Senders encode straight into the connection's queue under a short mutex
// and never wait for the network; the writer swaps the queue for its spare
// buffer and writes everything in it with one write call (Stats counts
// writes and frames, so coalescing is measurable; Options.NoCoalesce turns
// it off for comparison). The queue is bounded (Options.MaxPendingBytes), and
// so is a single write (Options.WriteTimeout): a peer that does not read is
// cut off with ErrSlowPeer, never buffered without limit.
//
// The reader checks each frame by decoding it (wire.Check) before it routes
// it. A Handler that is also a Decoder names, per frame type, a message of
// its own for that decode, so the frame it is handed is already decoded
// there and is not decoded a second time; Conn.State keeps such a
// handler's per-connection scratch on the connection itself.
//
// Call and Stream send a request under a fresh request id and wait for the
// reply in the shape of net/rpc's client: a pending table, one reader that
// matches replies, every pending call failed with the connection's error
// when it fails. Calls are bounded per connection (Options.MaxInFlight;
// callers block) and start no goroutine. A reply for an unknown id (late
// after a cancelled call, or bogus) is ignored and counted.
//
// # Connection errors and request errors
//
// As in HTTP/2, a broken stream or a broken peer is a connection error: a
// frame that fails wire.Check (malformed, wrong version, oversized), a
// Hello anywhere but first, an accepted connection without a timely Hello,
// a frame that stalls half-way (Options.FrameTimeout), a message the peer's
// role does not send (wire.Sender), or an error returned by the Handler
// closes the connection, logs the reason once (Options.Logger; a Server's
// and a Peer's connections at most once a second between them) and fails
// everything pending on it. A refusal (a *Refusal from the Handler, a
// message from the wrong role, a full server) and an idle cut first tell
// the peer why, in a wire.Error frame with request id 0. A
// request that is well formed but cannot be served is a request error: the
// server replies with a wire.Error frame, Call returns a *RemoteError, and
// the connection carries on.
//
// # Server and Peer
//
// Server accepts connections (clients bounded by ServerOptions.MaxConns,
// with ReservedConns more for the other roles) and requires each to open
// with a Hello within a timeout, so half-open connections cannot pile up;
// idle client and admin connections are closed after Options.IdleTimeout.
// Peer keeps one or more connections to an address, redialling with capped,
// jittered exponential backoff and sending its Hello first on each; with a
// Check it uses a connection only once the far side has answered with its
// own Hello; its Dial function is where TLS plugs in. A Peer
// drops one-way frames while disconnected (counted): the protocol redelivers
// what matters.
//
// # Ownership
//
// Every goroutine of this package can be stopped and waited for: a Conn's
// two with Close and Done, a Server's with Close, a Peer's with Close.
package mux
