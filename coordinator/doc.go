// Package coordinator is the coordinator server: it joins engine shards, the
// write-ahead log and the network.
package coordinator
