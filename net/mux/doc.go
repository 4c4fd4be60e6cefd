// Package mux multiplexes many pipelined requests and one-way messages over
// one connection, coalescing queued frames into one write.
package mux
