// Command commitd runs a two-phase-commit coordinator, a bank participant,
// an embedded demo cluster, load benchmarks and admin queries.
//
//	commitd coordinator --listen ADDR --data DIR --participant NAME=ADDR ... [--shards N] [--http ADDR]
//	commitd participant --name NAME --listen ADDR --data DIR --coordinator ADDR [--accounts N] [--balance B] [--http ADDR]
//	commitd demo        [--duration D]
//	commitd bench       --coordinator ADDR --participants NAME=ADDR,... [flags]
//	commitd admin status   --coordinator ADDR
//	commitd admin accounts --participant ADDR
//	commitd admin outcomes --participant ADDR
//	commitd version
//
// Errors are one line on standard error and a non-zero exit status.
package main
