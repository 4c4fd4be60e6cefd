// Package chaos tests a whole commitd cluster under faults and checks what
// the clients were told against what the participants hold.
//
// Four pieces, each usable alone:
//
//   - The checker (Check) is pure: given a History — the client's
//     acknowledgements, every participant's ledger, the balances — it
//     reports every violation of atomicity, durability, conservation and
//     liveness. It knows nothing of processes; checker_test.go feeds it a
//     history with a violation of each kind to show that it can fail.
//   - The process harness (Cluster, Proc) builds the commitd binary once and
//     runs a coordinator — or a replicated coordinator group of 3 or 5
//     replicas (Options.Replicas), whose leader it finds by asking each
//     replica's admin status (Leader) — and bank participants as separate
//     processes on loopback, each with its own data directory, which it
//     can kill -9, SIGSTOP, SIGCONT and restart on the same directory and
//     address.
//   - The network (Net), where the machine allows it (root, iproute2): each
//     process in a network namespace of its own, linked through veth pairs
//     to a bridge in a hub namespace that the root namespace also reaches,
//     on a private 10.213.X.0/24 that exists only on those links. A
//     partition sets a process's link down. Everything it makes is named
//     after the creating process, removed at the end, and removed by a
//     later run if that process died first (CleanLeftovers).
//   - The nemesis (Nemesis) injects those faults at seeded random moments,
//     always restoring what it broke before it returns; for a group it aims
//     at the leader (kill -9, SIGSTOP, partition) or a follower (kill -9).
//     LoseDecisions is a planted fault beyond what commitd promises to
//     survive, which the checker must catch.
//
// TestChaos ties them together against `commitd bench --ack-log`, once with
// a lone coordinator and once with a group (CHAOS_REPLICAS selects;
// CHAOS_DURATION sets the load, CHAOS_SEED replays a run's choices; loads of
// 2m or more also partition, CHAOS_PARTITIONS=1/0 forces it);
// TestChaosCatchesLostDecisions runs the planted fault. The disk-fault and
// front-door tests run servers in this process instead, where a failing
// file system (wal/waltest) and raw sockets are at hand.
// docs/testing.md says what is tested and the latest results.
package chaos
