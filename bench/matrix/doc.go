// Command matrix runs commitd's standard benchmark matrix on one machine
// and writes the cluster section of docs/benchmarks.md.
//
// Every cell starts a fresh cluster — a coordinator and bank participants,
// each a separate commitd process with its own new data directory, talking
// over loopback, every log durable (fdatasync) — runs `commitd bench`
// against it with --json, reads every process's CPU time from /proc, and
// stops the processes. The cells: closed loop at 1 to 4,096 callers with 2
// participants per transaction, 10 participants per transaction, an open
// loop just under the measured saturation point, and the same load with
// each optimization switched off (--group-commit=false, --coalesce=false,
// --batch=false, --shards 1), side by side with the default, and a
// 3-replica coordinator group (--id/--peers, every replica on this one
// machine) at 1, 100 and 1,000 callers, each beside a one-coordinator run
// of its own.
//
//	go run ./bench/matrix            # the full matrix (a few minutes)
//	go run ./bench/matrix -quick     # short cells, fewer of them
//	go run ./bench/matrix -only 'paired with --staged|--staged=false' -cpuprofile /tmp/prof
//	                                 # some cells, with a CPU profile and /metrics of every process
//	go run ./bench/matrix -no-build -bin NEW -against OLD -rounds 5 -only '^closed 1000 callers, 2 per txn$'
//	                                 # two binaries, the same cells, alternated: pairs and medians
//
// Before and after the cells it measures the disk where the logs go
// (-fsync N: N × 4 KiB pwrite + fdatasync into written blocks, on one
// file and on three at once), so that every run names its disk.
//
// The generated part of the document sits between the markers
// <!-- cluster:begin --> and <!-- cluster:end -->; the rest of the file
// (other sections) is kept.
package main
