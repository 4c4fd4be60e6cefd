// Package embed runs a commitd participant inside your own Go program, with
// your own data behind it: the stable API for Go services that take part in
// commitd's two-phase commits without running a separate participant
// process. None of commitd's internals needs importing — not its protocol
// engine, its log or its wire format (package client runs transactions);
// a transaction id is a github.com/google/uuid UUID. The names of this
// package are kept stable: they change only compatibly.
//
// A participant needs a coordinator to vote to (`commitd coordinator
// --participant NAME=ADDR`, naming this participant and the address it
// listens on) and a data directory for its log. Your data comes in one of
// two shapes:
//
//   - Resource: the data lives in your process's memory (an inventory, a
//     cache of counters), and the participant's write-ahead log makes it
//     durable: the work of every YES vote is logged before the vote
//     leaves, decisions are logged, and the log is checkpointed with your
//     Snapshot. After a crash the participant replays its log into your
//     Resource (Load, Restore, Commit, Abort) before it serves. The calls
//     are quick, in-memory, and made from one goroutine.
//   - Service: the data lives in a store that keeps prepared work durably
//     itself (a database, a file of your own) and each call may block.
//     This is the contract of an HTTP participant (docs/http-participant.md)
//     as Go methods.
//
// The example runs an inventory service that reserves stock in two
// warehouses atomically.
package embed

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/remote"
	"github.com/commitd/commitd/protocol"
	"go.opentelemetry.io/otel/trace"
)

// TxnID identifies a transaction: a UUID (version 7, made by the client).
type TxnID = protocol.TxnID

// Vote is a participant's answer to a prepare.
type Vote = protocol.Vote

// The votes a Resource or a Service answers.
const (
	// Yes: the work can be done and is held (reserved, locked) until
	// Commit or Abort. After a Yes the participant never aborts on its
	// own: it waits for the coordinator's decision.
	Yes = protocol.VoteYes
	// No: the work cannot be done; nothing is held. The transaction
	// aborts everywhere.
	No = protocol.VoteNo
	// ReadOnly: nothing to commit here; nothing is held and neither Commit
	// nor Abort follows.
	ReadOnly = protocol.VoteReadOnly
)

// Resource is data in your process that the participant's log keeps
// durable. The participant calls every method from one goroutine, so they
// need no locking among themselves (take your own lock if your program
// also reads the data elsewhere), and none may block: each is a quick
// change in memory.
type Resource interface {
	// Prepare checks that work can be done and, answering Yes, holds what
	// it needs until Commit or Abort. The work bytes are what the
	// client's branch for this participant carried (at most 4096 bytes).
	Prepare(txn TxnID, work []byte) Vote
	// Commit makes a Yes-prepared transaction's work permanent and
	// releases its holds.
	Commit(txn TxnID)
	// Abort releases a Yes-prepared transaction's holds.
	Abort(txn TxnID)
	// Restore re-establishes, during recovery, the hold of a transaction
	// prepared before a crash, from its work. It must not fail: the hold
	// existed.
	Restore(txn TxnID, work []byte)
	// Snapshot appends the committed state (not the holds) to dst. The
	// participant logs it every CheckpointEvery decisions so that its log
	// can be trimmed.
	Snapshot(dst []byte) []byte
	// Load replaces all state, holds included, with a snapshot.
	Load(snapshot []byte) error
}

// Service is a store that keeps prepared work durably itself; every call
// may block, bounded by its context, and may arrive more than once for the
// same transaction (answer as the first time). Prepare errors and
// timeouts are NO votes (followed by an Abort); Commit and Abort errors
// are retried with backoff until they succeed. Prepared lists what the
// store holds prepared; the participant aborts any it has no record of.
// docs/http-participant.md states the contract in full.
type Service interface {
	Prepare(ctx context.Context, txn TxnID, work []byte) (Vote, error)
	Commit(ctx context.Context, txn TxnID) error
	Abort(ctx context.Context, txn TxnID) error
	Prepared(ctx context.Context) ([]TxnID, error)
}

// Config is what Start needs. Zero values take the defaults noted.
type Config struct {
	// Name is the participant's name, as the coordinator knows it
	// (--participant NAME=ADDR). Required.
	Name string
	// Listen is the address the coordinator dials (default
	// 127.0.0.1:7401); Listener, if set, is used instead.
	Listen   string
	Listener net.Listener
	// DataDir holds the participant's log. Required; one process at a
	// time (it is locked).
	DataDir string
	// Coordinator is the coordinator's address (every replica's,
	// comma-separated, for a replicated coordinator). Required.
	Coordinator string
	// Resource or Service: exactly one.
	Resource Resource
	Service  Service
	// PrepareTimeout bounds a Service's Prepare (default 2s).
	PrepareTimeout time.Duration
	// CheckpointEvery is the number of decisions between snapshots of a
	// Resource (default 10000).
	CheckpointEvery int
	// SegmentBytes is the size of each log segment file (default 64 MiB;
	// the log needs a few of them free to start).
	SegmentBytes int64
	// TLS, when set, is required of every connection (mutual TLS; the
	// coordinator's certificate must be valid for its address's host).
	TLS *tls.Config
	// HTTP, if set, serves /metrics, /debug/pprof/ and /healthz.
	HTTP string
	// TracerProvider, if set, turns tracing on (docs/tracing.md): spans
	// for each traced prepare and decision, children of the
	// coordinator's; a Service's Prepare, Commit and Abort get a ctx
	// carrying the participant's span (trace.SpanFromContext), so that its
	// own spans join the transaction's trace. Nil: no tracing.
	TracerProvider trace.TracerProvider
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

// Participant is a running participant.
type Participant struct {
	srv *participant.Server
}

// Start recovers the participant from its data directory — replaying the
// log into a Resource — and starts serving. It returns once the
// participant listens; the connection to the coordinator comes up in the
// background (WaitConnected).
func Start(cfg Config) (*Participant, error) {
	pc := participant.Config{
		Name: cfg.Name, Listen: cfg.Listen, Listener: cfg.Listener, DataDir: cfg.DataDir,
		Coordinator: cfg.Coordinator, CheckpointEvery: cfg.CheckpointEvery, SegmentBytes: cfg.SegmentBytes,
		TLS: cfg.TLS, HTTP: cfg.HTTP, Logger: cfg.Logger, TracerProvider: cfg.TracerProvider,
	}
	var fwd *remote.Resource
	switch {
	case (cfg.Resource == nil) == (cfg.Service == nil):
		return nil, errors.New("embed: set exactly one of Config.Resource and Config.Service")
	case cfg.Resource != nil:
		pc.Resource = inspectable{cfg.Resource}
	default:
		fwd = remote.New(cfg.Service, remote.Options{PrepareTimeout: cfg.PrepareTimeout, Logger: cfg.Logger})
		pc.Resource = fwd
	}
	srv, err := participant.Start(pc)
	if err != nil {
		if fwd != nil {
			fwd.Close()
		}
		return nil, err
	}
	return &Participant{srv: srv}, nil
}

// Addr is the address the participant listens on.
func (p *Participant) Addr() net.Addr { return p.srv.Addr() }

// WaitConnected waits until the participant is connected to the
// coordinator, or ctx ends.
func (p *Participant) WaitConnected(ctx context.Context) error { return p.srv.WaitConnected(ctx) }

// Close stops the participant. Transactions prepared stay prepared in its
// log (or the Service) and are settled after the next Start.
func (p *Participant) Close() error { return p.srv.Close() }

// Done is closed when the participant has stopped, after Close or a fatal
// error (a failed write or fsync of its log: restart the process).
func (p *Participant) Done() <-chan struct{} { return p.srv.Done() }

// Err is the fatal error that stopped the participant, if any.
func (p *Participant) Err() error { return p.srv.Err() }

// inspectable makes a Resource what the participant server takes: the
// admin report's account count and total do not apply to it.
type inspectable struct{ Resource }

func (inspectable) Accounts() int { return 0 }
func (inspectable) Total() int64  { return -1 }

// The server recognizes a forwarding resource by this interface; a
// mismatch would leave it unattached.
var _ participant.Forwarding = (*remote.Resource)(nil)
