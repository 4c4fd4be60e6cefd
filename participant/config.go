// This file holds the participant's Config: its fields, defaults and checks.

package participant

import (
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/commitd/commitd/cluster"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"go.opentelemetry.io/otel/trace"
)

// Config is everything a participant server needs. Zero values take the
// defaults noted.
type Config struct {
	// Name is the participant's name, as the coordinator knows it. Required.
	Name string
	// Listen is the address the coordinator dials (default 127.0.0.1:7401).
	Listen string
	// Listener, if set, is used instead of listening on Listen.
	Listener net.Listener
	// DataDir holds the participant's log and ledger. Required.
	DataDir string
	// Coordinator is the coordinator's address: votes, acks and inquiries
	// go there. Required. For a replicated coordinator (docs/ha.md) it
	// lists every replica's address, separated by commas: a vote or ack
	// then goes back on the connection its prepare or decision came on,
	// an inquiry on the one that last brought a prepare or decision (the
	// leader), and either goes to every replica when that connection is
	// gone or has been silent for InquireAfter.
	Coordinator string
	// Cluster, instead of Coordinator, is the map of a cluster of several
	// coordinator groups (docs/scale.md): a transaction's votes, acks and
	// inquiries go to the group stamped in its id, found as for
	// Coordinator within that group; never to another group, whose
	// answer about it would be a presumed abort.
	Cluster *cluster.Map
	// ClusterFile is the file Cluster was read from (--cluster), which
	// ReloadClusterFile re-reads (SIGHUP, `commitd admin cluster
	// reload`). Empty: the map can be replaced only by ReloadCluster.
	ClusterFile string
	// Resource does the work. Required; the bank resource for the bank
	// participant.
	Resource Inspectable

	// Tick is the engine's clock period (default 10ms).
	Tick time.Duration
	// InquireAfter: a prepared transaction with no decision this long asks
	// the coordinator (default 1s), then with backoff up to InquireMax
	// (default 5s).
	InquireAfter, InquireMax time.Duration
	// Remember is how long a decided transaction is kept for duplicates
	// (default 30s; at least this long and at most twice as long). Keep it
	// at least twice the coordinator's Remember (5 s by default), as each
	// side may forget anywhere between its window and twice it: a participant that forgot a transaction the coordinator
	// still remembers as committed could, on a stale duplicate prepare,
	// prepare it again and be told to commit it again (docs/model/README.md,
	// FORGET_PART). The coordinator sends each prepare once over TCP, so a
	// stale duplicate needs a network that replays old segments.
	Remember time.Duration
	// CheckpointEvery is the number of decided transactions between
	// checkpoints, which let the log retire (default 10000).
	CheckpointEvery int
	// ScanEvery is how often a Durable resource is asked what it holds
	// prepared, so that none is left behind holding locks (default 2s).
	ScanEvery time.Duration
	// LedgerRetention is how long the ledger keeps a decision for `admin
	// outcomes` (default 1h): its segments are retired once every entry
	// in them is older and the protocol log has retired every record they
	// came from (see ledger). The ledger has no protocol role, so any
	// retention is safe; it bounds the ledger's disk (17 bytes a decision)
	// and the read of it at every start.
	LedgerRetention time.Duration

	// SegmentBytes is the size of each log segment file (default 64 MiB;
	// the ledger's are a quarter of it).
	SegmentBytes int64
	// FS is the file system under the log and the ledger (nil: the
	// operating system's); tests inject crashes and I/O errors through it.
	FS wal.FS

	// NoGroupCommit and NoCoalesce: see the coordinator's Config.
	NoGroupCommit bool
	NoCoalesce    bool
	// NoBatch: see the coordinator's Config.
	NoBatch bool
	// ConnsToCoordinator is the number of connections to the coordinator
	// (default 2).
	ConnsToCoordinator int
	// TracerProvider, when set, turns tracing on (docs/tracing.md): a span
	// for each prepare that carries the coordinator's trace context (or
	// that the provider's sampler picks) and for its decision, children
	// of the coordinator's prepare span; a Traced resource's calls carry
	// them. Nil: no tracing, no trace state.
	TracerProvider trace.TracerProvider
	// TLS, when set, is required of every connection (mutual TLS).
	TLS *tls.Config
	// CoordinatorIdentity is, with TLS, what the certificate of a
	// connection that says Hello as the coordinator must be valid for (a
	// DNS name or IP address in its subject alternative names, or its
	// common name); any other is refused. Default: the host of each
	// address in Coordinator — the identities this participant already
	// requires of the coordinator's replicas when it dials them.
	CoordinatorIdentity string
	// AdminIdentities are, with TLS, the certificate identities allowed
	// to read admin reports (matched like CoordinatorIdentity). Default:
	// any certificate the CA signed — the reports change nothing.
	AdminIdentities []string
	// OperatorIdentities are, with TLS, the certificate identities allowed
	// to resolve a transaction by hand (`commitd admin resolve`): none by
	// default, so that with TLS nobody may. Without TLS, a resolve must
	// come from this machine (loopback).
	OperatorIdentities []string
	// HTTP, if set, serves /metrics, /debug/pprof/ and /healthz.
	HTTP string
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) fill() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7401"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Tick, 10*time.Millisecond)
	def(&c.InquireAfter, time.Second)
	def(&c.InquireMax, 5*time.Second)
	def(&c.Remember, 30*time.Second)
	def(&c.ScanEvery, 2*time.Second)
	def(&c.LedgerRetention, DefaultLedgerRetention)
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = 10000
	}
	if c.ConnsToCoordinator <= 0 {
		c.ConnsToCoordinator = 2
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.Name == "" || len(c.Name) > protocol.MaxNameLen:
		return fmt.Errorf("participant: name %q must be 1 to %d bytes", c.Name, protocol.MaxNameLen)
	case c.DataDir == "":
		return errors.New("participant: a data directory is required")
	case c.Coordinator == "" && c.Cluster == nil:
		return errors.New("participant: the coordinator's address is required")
	case c.Coordinator != "" && c.Cluster != nil:
		return errors.New("participant: give the coordinator's address or a cluster map, not both")
	case c.Resource == nil:
		return errors.New("participant: a resource is required")
	}
	return nil
}

func (c *Config) ticks(d time.Duration) int { return max(1, int((d+c.Tick-1)/c.Tick)) }

// coordinatorIdentities are the identities a coordinator's certificate may
// carry: CoordinatorIdentity if set, else the host of each of its
// addresses (every replica of a replicated coordinator).
func (c *Config) coordinatorIdentities() []string {
	if c.CoordinatorIdentity != "" {
		return []string{c.CoordinatorIdentity}
	}
	var ids []string
	for _, addr := range strings.Split(c.Coordinator, ",") {
		ids = append(ids, link.Host(addr))
	}
	return ids
}
