// Package bench generates load against a commitd cluster and records
// latency in histograms.
//
// Run drives bank transfers (Workload) through a client.Client, either
// closed-loop (Concurrency callers, each starting its next transaction when
// the previous one answers) or open-loop (Rate transactions a second on a
// fixed schedule, each latency measured from its scheduled start, so a
// stall shows in the latencies instead of lowering the load). Latencies go
// into HDR histograms, one per outcome, striped over a few locks; once a
// second the interval's counts and committed latencies become one Interval
// of the Report's series.
//
// # The ack log
//
// With Config.AckLog set, every transaction leaves one line,
//
//	<uuid> <outcome> <participant>,<participant>...
//
// with the outcome its caller was told, for a crash test to check
// afterwards (harness/chaos reads it). The caller queues the line right
// after it has recorded the outcome. One writer goroutine writes in rounds:
// woken by the first line queued after a round, it yields once so that the
// callers already runnable add theirs, then takes everything queued and
// writes it with one Write call (one write(2) for an *os.File). No line is
// held in a user-space buffer across rounds, so each is in the kernel
// within one write round of its outcome: a kill -9 of the bench loses at
// most the lines queued since the last round began, and may leave the last
// line cut short, which the checker ignores. The kernel's page cache keeps
// what was written; nothing is fsynced, as a crash test kills processes,
// not the machine.
//
// # Cost
//
// The load generator shares the machine's cores with the servers it
// measures, so it keeps its own cost per transaction small: the client
// allocates nothing per committed call, transaction ids come from a
// per-caller generator seeded once (idSource), not crypto/rand, and the ack
// log costs one write per round, not per transaction.
// BenchmarkRunner measures it against a stand-in coordinator
// (client/clienttest).
package bench
