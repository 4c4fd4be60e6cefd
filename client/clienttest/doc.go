// Package clienttest provides a stand-in coordinator for tests and
// benchmarks of the client and of the load generator, without a cluster.
package clienttest
