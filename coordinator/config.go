package coordinator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/commitd/commitd/cluster"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/wal"
	"go.opentelemetry.io/otel/trace"
)

// Config is everything a coordinator needs. Zero durations and counts take
// the defaults noted on each field.
type Config struct {
	// Listen is the address for clients, participants and admin queries
	// (default 127.0.0.1:7400).
	Listen string
	// Listener, if set, is used instead of listening on Listen (tests and
	// the demo make listeners first so that every address is known).
	Listener net.Listener
	// DataDir holds the coordinator's log. Required.
	DataDir string
	// Participants maps each participant name to its address: the
	// initial list. Once `admin participants add|remove` has changed it,
	// the list persisted in DataDir wins (participants.go; a replica's is
	// in its raft log, partmembers.go).
	Participants map[string]string
	// Shards is the number of engine shards, each on its own goroutine
	// (default GOMAXPROCS).
	Shards int

	// Tick is the engine's clock period (default 10ms). The timeouts below
	// are converted to ticks of it.
	Tick time.Duration
	// PrepareTimeout: a transaction missing a vote this long aborts
	// (default 2s).
	PrepareTimeout time.Duration
	// RedeliverMin and RedeliverMax bound the backoff between redeliveries
	// of an unacknowledged commit decision (defaults 100ms and 2s).
	RedeliverMin, RedeliverMax time.Duration
	// Remember is how long a finished transaction's outcome is kept for
	// late messages and to refuse a reused id (default 5s): at least this
	// long and at most twice as long (two generations, engine/recent.go).
	// Forgetting is safe at any time — presumed abort answers the same —
	// and each remembered transaction costs about 100 bytes of
	// pointer-free tables (id, outcome, votes, branch-name hashes, and
	// its index slots), so at
	// 30,000 transactions/s a 30 s window holds up to ~180 MiB.
	//
	// It also bounds the transaction ids accepted: a Begin's id is a
	// UUIDv7, and one whose time is older than Remember less MaxIDAhead
	// (less two ticks), or older than the coordinator's start, is
	// rejected (protocol.CauseStaleID) — had it been used before, the
	// coordinator could have forgotten it, and a reused id must never start
	// a second transaction (docs/protocol.md, "Transaction ids have a
	// lifetime").
	Remember time.Duration
	// MaxTxns bounds the transactions the coordinator holds at once, in
	// flight and remembered, over all shards (default 1,048,576; each
	// shard holds its share). A begin beyond it is rejected with cause
	// overloaded: remembering is by time, so without a bound a flood of
	// quick aborts grows the heap with its rate (5.8 M aborts in 40 s
	// left 281 MB). A remembered transaction takes 80–160 bytes of map
	// (a 68-byte slot and the map's slack: 928k remembered aborts took
	// 151 MiB in TestFloodOfQuickAbortsKeepsHeapBounded without the
	// bound), so the default caps that set near 160 MiB — more while the
	// dropped generation's map keeps its size — and admits at least
	// MaxTxns per 2×Remember: 100,000 transactions/s with the default
	// Remember, more than the coordinator sustains on the machines we
	// measure. Lower it, or Remember, to trade throughput for memory.
	MaxTxns int
	// MaxIDAhead is how far ahead of the coordinator's clock a Begin's id
	// time may be — how far clients' clocks may run ahead (default 1s, at
	// most half of Remember). Every id may be up to this much less old, as
	// an id ahead stays acceptable that much longer.
	MaxIDAhead time.Duration

	// Group is this coordinator group's number in a cluster of several
	// (docs/scale.md), 1..cluster.MaxGroup, or 0 for a coordinator that is
	// the only group. A grouped coordinator takes only transactions whose
	// id is stamped with its group (cluster.Stamp) and answers no vote,
	// ack or inquiry for another group's id: presumed abort is true only
	// at the group that owns a transaction, so a misrouted inquiry must go
	// unanswered (the participant asks again, at the right group), never
	// be told "abort".
	Group uint16
	// Cluster, with Group, is the cluster's map (docs/scale.md): the group
	// then refuses new transactions while the map says it drains or is
	// retired, and names the map's version when it refuses a Begin.
	// ReloadCluster replaces it. Nil: only Group's rule.
	Cluster *cluster.Map
	// ClusterFile is the file Cluster was read from (--cluster), which
	// ReloadClusterFile re-reads (SIGHUP, `commitd admin cluster
	// reload`). Empty: the map can be replaced only by ReloadCluster.
	ClusterFile string

	// OutcomeRetention and OutcomeMaxBytes bound the outcome index
	// (<data>/outcomes), which answers `commitd admin txn` and
	// client.Outcome after the shards have forgotten a transaction
	// (Remember): an outcome is kept at least OutcomeRetention (default
	// 24 h) unless the index would hold more than OutcomeMaxBytes of
	// entries (default 1 GiB, some 30 million transactions), in which case
	// the oldest go first. See outcomeIndex and docs/operations.md.
	OutcomeRetention time.Duration
	OutcomeMaxBytes  int64

	// SegmentBytes is the size of each log segment file (default 64 MiB).
	// Segments are written out in full ahead of need, so small test
	// clusters use small ones.
	SegmentBytes int64
	// FS is the file system under the log (nil: the operating system's);
	// tests inject crashes and I/O errors through it.
	FS wal.FS

	// Classic runs every transaction with classic two-phase commit. By
	// default (false) a transaction of two or more branches whose every
	// participant can prevent (its Hello says so) runs with a staged
	// decision (docs/protocol.md "Staged commits"): the client is told
	// "committed" after one round trip and one (parallel) fsync, where
	// classic waits for the decision's fsync too; a participant that is
	// down keeps such a transaction open until it returns (classic aborts
	// it after PrepareTimeout). A replicated coordinator (Peers) stages
	// the same way: its staged record is a raft entry (docs/ha.md).
	Classic bool
	// NoGroupCommit gives every record its own fdatasync instead of one for
	// many; for benchmarks that show what group commit buys.
	NoGroupCommit bool
	// NoCoalesce writes each frame with its own write instead of one write
	// for every queued frame on a connection; for benchmarks.
	NoCoalesce bool
	// NoBatch makes each shard's pump step and flush one input at a time
	// instead of a whole inbox batch (see pump.Pump.NoBatch); for
	// benchmarks that show what batching buys.
	NoBatch bool
	// ConnsPerParticipant is how many connections the coordinator keeps to
	// each participant (default 2).
	ConnsPerParticipant int

	// TracerProvider, when set, turns tracing on (docs/tracing.md): a
	// span for each transaction whose Begin carries a trace context, or
	// that the provider's sampler picks, with child spans for each
	// prepare, the decision and phase two; prepares carry the trace
	// context to the participants. Nil: no tracing, no trace state.
	TracerProvider trace.TracerProvider

	// TLS, when set, is required of every connection in both directions
	// (mutual TLS: its ClientCAs verify peers that dial in, its RootCAs
	// verify participants dialed out to).
	TLS *tls.Config
	// ParticipantIdentities maps a participant's name to what the
	// certificate of a connection that says Hello as that participant
	// must be valid for, with TLS (a DNS name or IP address in its subject
	// alternative names, or its common name). A participant not listed
	// must present a certificate for its name or for the host of its
	// address (the identity the coordinator already requires when it
	// dials it). Any other certificate is refused.
	ParticipantIdentities map[string]string
	// ReplicaIdentity is, with TLS, what the certificate of another
	// replica of the group (Peers) must be valid for, both when it dials
	// in and when this replica dials it (a DNS name or IP address in its
	// subject alternative names, or its common name). Default: the host of
	// that replica's address in Peers. A dialed replica's certificate must
	// be valid for the host of its address as well, as every dialed
	// peer's is.
	ReplicaIdentity string
	// AdminIdentities are, with TLS, the certificate identities allowed to
	// read admin reports and, on a replica of a group, to change its
	// members (admin replicas add|remove). Default: any certificate the CA
	// signed — narrow it where membership changes matter.
	AdminIdentities []string

	// MaxClients bounds the client connections (default
	// mux.DefaultMaxConns, 10,000); mux.DefaultReservedConns more are kept
	// for participants and admin tools. A client beyond it is refused with
	// an Error frame that says so, and the refusal is logged.
	MaxClients int
	// FrameTimeout and IdleTimeout bound how long a frame may take to
	// arrive whole and how long a client or admin connection may send
	// nothing (defaults mux.DefaultFrameTimeout, 10 s, and
	// mux.DefaultIdleTimeout, 5 min; see mux.Options).
	FrameTimeout, IdleTimeout time.Duration

	// HTTP, if set, is the address of the observability endpoint:
	// /metrics, /debug/pprof/, /healthz.
	HTTP string

	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger

	// ID and Peers make this coordinator one replica of a group that
	// replicates its records with raft (docs/ha.md): Peers maps every
	// replica's id (from 1) to its Listen address, this one's included,
	// and must be the same on every replica. Without Peers the
	// coordinator runs alone, exactly as it always has.
	//
	// Peers bootstraps the group's configuration when the data directory
	// is empty; afterwards the configuration in the raft log wins, and
	// Peers is only checked against it (a member at another address is
	// refused). Join makes a replica with an empty data directory join an
	// existing group instead of bootstrapping one: it waits for the
	// leader (from the replicas Peers names) to add it (`admin replicas
	// add`) and send it a snapshot.
	ID    uint64
	Peers map[uint64]string
	Join  bool
	// RaftTick is the raft clock's period (default 50ms); an election
	// starts after ElectionTicks of them without a leader (default 10,
	// randomised up to twice that), and a leader sends a heartbeat every
	// tick.
	RaftTick      time.Duration
	ElectionTicks int
	// RaftSnapshotEvery is how many raft entries are applied between
	// snapshots (default 10,000); each compacts the raft log.
	RaftSnapshotEvery int
	// CatchUpTimeout bounds how long `admin replicas add` waits for the
	// new replica, a learner, to catch up before it gives up (it stays a
	// learner; default 30s).
	CatchUpTimeout time.Duration
}

// DefaultConfig returns a Config with every default filled in, for dataDir.
func DefaultConfig(dataDir string) Config {
	c := Config{DataDir: dataDir}
	c.fill()
	return c
}

func (c *Config) fill() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7400"
	}
	if c.Shards <= 0 {
		c.Shards = runtime.GOMAXPROCS(0)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Tick, 10*time.Millisecond)
	def(&c.PrepareTimeout, 2*time.Second)
	def(&c.RedeliverMin, 100*time.Millisecond)
	def(&c.RedeliverMax, 2*time.Second)
	def(&c.Remember, 5*time.Second)
	def(&c.OutcomeRetention, DefaultOutcomeRetention)
	if c.OutcomeMaxBytes <= 0 {
		c.OutcomeMaxBytes = DefaultOutcomeMaxBytes
	}
	if c.MaxTxns <= 0 {
		c.MaxTxns = 1 << 20
	}
	def(&c.MaxIDAhead, min(time.Second, c.Remember/4))
	if c.ConnsPerParticipant <= 0 {
		c.ConnsPerParticipant = 2
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def(&c.RaftTick, 50*time.Millisecond)
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = 10
	}
	if c.CatchUpTimeout <= 0 {
		c.CatchUpTimeout = 30 * time.Second
	}
	if c.RaftSnapshotEvery <= 0 {
		c.RaftSnapshotEvery = 10000
	}
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("coordinator: a data directory is required")
	}
	if len(c.Participants) == 0 {
		return errors.New("coordinator: at least one participant (NAME=ADDR) is required")
	}
	for name, addr := range c.Participants {
		if err := checkParticipant(name, addr); err != nil {
			return fmt.Errorf("coordinator: %v", err)
		}
	}
	if c.Tick < time.Microsecond {
		return fmt.Errorf("coordinator: tick %v is shorter than a microsecond", c.Tick)
	}
	if c.MaxIDAhead*2 > c.Remember-2*c.Tick {
		return fmt.Errorf("coordinator: max id ahead %v is more than half of remember %v (less two ticks)", c.MaxIDAhead, c.Remember)
	}
	if seg := outcomeSegmentBytes(c.SegmentBytes); c.OutcomeMaxBytes < 4*seg {
		// Retirement works by segment: a cap below a few of them could
		// never be kept.
		return fmt.Errorf("coordinator: outcome index cap of %d bytes is less than four of its segments of %d bytes (a quarter of --segment-size)", c.OutcomeMaxBytes, seg)
	}
	if c.OutcomeRetention < time.Second {
		return fmt.Errorf("coordinator: outcome retention %v is shorter than a second", c.OutcomeRetention)
	}
	if c.Shards > 1024 {
		return fmt.Errorf("coordinator: %d shards is more than 1024", c.Shards)
	}
	if c.Group > cluster.MaxGroup {
		return fmt.Errorf("coordinator: group %d is more than %d", c.Group, cluster.MaxGroup)
	}
	if err := checkClusterMap(c.Cluster, c.Group); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if len(c.Peers) > 0 || c.ID != 0 {
		return c.validateReplica()
	}
	return nil
}

// participantIdentities lists the identities a certificate may carry to
// speak for participant name (see ParticipantIdentities).
// at addr.
func (c *Config) participantIdentities(name, addr string) []string {
	if id, ok := c.ParticipantIdentities[name]; ok {
		return []string{id}
	}
	return []string{name, link.Host(addr)}
}

// replicaIdentities lists the identities the certificate of the replica
// at addr may carry (see ReplicaIdentity).
func (c *Config) replicaIdentities(addr string) []string {
	if c.ReplicaIdentity != "" {
		return []string{c.ReplicaIdentity}
	}
	return []string{link.Host(addr)}
}

// ticks converts a duration to engine ticks, at least 1.
func (c *Config) ticks(d time.Duration) int {
	return max(1, int((d+c.Tick-1)/c.Tick))
}

func (c *Config) shardConfig() engine.ShardConfig {
	return engine.ShardConfig{
		PrepareTimeoutTicks: c.ticks(c.PrepareTimeout),
		RedeliverMinTicks:   c.ticks(c.RedeliverMin),
		RedeliverMaxTicks:   c.ticks(c.RedeliverMax),
		RememberTicks:       c.ticks(c.Remember),
		MaxTxns:             max(1, (c.MaxTxns+c.Shards-1)/c.Shards),
		TickMicros:          int(c.Tick / time.Microsecond),
		MaxIDAheadMs:        int(c.MaxIDAhead / time.Millisecond),
	}
}
