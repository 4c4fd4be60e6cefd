// Package link holds what the servers and the client need at their network
// edge, over net/mux and net/wire: dialing (with or without TLS), checking
// the identity in a peer's certificate, the dialed-out connections' status
// for `admin status`, and answering admin requests with JSON that may span
// several frames.
//
// It imports no engine and no server: it sits beside mux, under everything
// that talks.
package link
