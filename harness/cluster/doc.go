// Package cluster starts a whole commitd cluster inside one process — a
// coordinator and bank participants on loopback, each with its own data
// directory — for the demo and for tests. Every server is the real one:
// real logs with fdatasync, real TCP connections.
package cluster
