// Package nodetest holds what the coordinator's and the participant's
// package tests share, so that the two servers are tested the same way.
//
// The far side: a test of one server alone needs the other side of the
// protocol, a fake participant for the coordinator's tests and a fake
// coordinator for the participant's. Either side accepts the other's
// connections (prepares and decisions flow one way, votes, acks and
// inquiries the other) and dials its own, so one Peer type serves both:
// what it does with each frame is the test's handler.
//
// The server's lifecycle: Start starts a server, closes it at cleanup and
// waits until it is connected; WaitFailed checks that a fatal error stopped
// it and is what Err reports. Both take any Server, which both servers are.
//
// The operator's side: Admin (a raw admin connection), Report (an admin
// report, decoded), RemoteError (what an error reply said) and Metric (one
// series from /metrics).
package nodetest
