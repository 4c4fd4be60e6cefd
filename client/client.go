package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
)

// Outcome is what a transaction came to.
type Outcome = protocol.Outcome

// The outcomes a transaction can have.
const (
	Committed = protocol.OutcomeCommitted
	Aborted   = protocol.OutcomeAborted
	Unknown   = protocol.OutcomeUnknown
	// Rejected: nothing was started. Result.Cause says why:
	// protocol.CauseInvalid, the request is wrong and fails again unchanged;
	// protocol.CauseOverloaded, the coordinator held as many transactions as
	// it may — retry later, with the same id or a new one.
	Rejected = protocol.OutcomeRejected
)

// Branch is one participant's share of a transaction: who, and what to do
// (opaque to the coordinator; the participant's resource reads it).
type Branch struct {
	Participant string
	Work        []byte
}

// ErrNotConnected is the error (test it with errors.Is) of a transaction
// that was never sent: no connection to the coordinator was up within
// DialTimeout. Its Result is Aborted, as nothing was started; the
// coordinator may be restarting, so a caller retrying in a loop should
// pause first.
var ErrNotConnected = mux.ErrNotConnected

// Result is the outcome of one transaction and, for an abort or a
// rejection, why.
type Result struct {
	Txn     uuid.UUID
	Outcome Outcome
	// Cause and Participant say why it aborted: which participant voted
	// no or did not vote in time. For a rejection Cause says whether
	// retrying can help: CauseOverloaded (the coordinator held as many
	// transactions as it may; retry later, same id), CauseStaleID (an id
	// the coordinator can no longer check for reuse; retry with a new id)
	// or CauseInvalid (the request is wrong and fails again unchanged).
	// Detail says why it was rejected, or why the outcome is unknown.
	Cause       protocol.Cause
	Participant string
	Detail      string
}

func (r Result) String() string {
	switch r.Outcome {
	case Aborted:
		return fmt.Sprintf("%v aborted (%v at %s)", r.Txn, r.Cause, r.Participant)
	case Rejected:
		if r.Cause == protocol.CauseStaleID {
			return fmt.Sprintf("%v rejected (stale id: make a new one): %s", r.Txn, r.Detail)
		}
		return fmt.Sprintf("%v %v: %s", r.Txn, r.Outcome, r.Detail)
	case Unknown:
		return fmt.Sprintf("%v %v: %s", r.Txn, r.Outcome, r.Detail)
	}
	return fmt.Sprintf("%v %v", r.Txn, r.Outcome)
}

// Options configure a Client. The zero value works.
type Options struct {
	// Conns is the number of connections to the coordinator (default 1);
	// calls go round-robin over them.
	Conns int
	// TLS, when set, is used for every connection (mutual TLS: set
	// Certificates to the client's certificate).
	TLS *tls.Config
	// DialTimeout bounds Dial's wait for a first connection (default 5s),
	// and Run's wait for a new one when none is up (the coordinator
	// restarted, or closed a connection that was idle for minutes).
	DialTimeout time.Duration
	// MaxInFlight bounds the transactions in flight per connection
	// (default mux.DefaultMaxInFlight).
	MaxInFlight int
	// ClusterReload, for DialCluster only, is where a newer cluster map
	// is had when a group refuses a Begin because of its map (the id is
	// another group's, or the group drains or is retired): Cluster.Run
	// then puts the map it returns in use, if newer, and runs the
	// transaction again under a new id stamped by it. Nil: the refusal is
	// returned, a *WrongGroupError. MapFile(path) re-reads a map file.
	ClusterReload func(ctx context.Context) (*cluster.Map, error)
}

// Client runs transactions through one coordinator. It is safe for
// thousands of concurrent callers: their requests are pipelined over a few
// multiplexed connections.
//
// Given the replicas of a replicated coordinator (docs/ha.md), it sends to
// the one it believes leads and follows "not leader, try X" answers; a
// Begin that was refused that way, or never sent, is sent again to the
// next replica — nothing was started — while one whose answer was lost is
// Unknown, never retried. After a Begin that got no answer in time (the
// replica may be paused or cut off) later calls start at another replica.
type Client struct {
	peer        *mux.Peer     // the lone coordinator; nil for a group
	pool        sync.Pool     // *scratch
	dialTimeout time.Duration // immutable

	// group is nil for a lone coordinator.
	group *group

	// addr and tls are Dial's, for Outcome's admin connections.
	addr string
	tls  *tls.Config
}

// scratch is one call's encode and decode buffers, pooled so that a call
// allocates almost nothing.
type scratch struct {
	begin   wire.Begin
	outcome wire.Outcome
	buf     []byte
	// names holds the branches' participant names, copied out of the
	// caller's strings: a []byte(name) conversion per branch would
	// allocate on every call.
	names []byte
}

// Dial connects to the coordinator at addr and waits until at least one
// connection is up. The client reconnects by itself if the coordinator
// restarts. For a replicated coordinator addr lists every replica's
// address, separated by commas; Dial then waits for a connection to the
// first one that answers.
func Dial(addr string, opts Options) (*Client, error) {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if strings.Contains(addr, ",") {
		c, err := dialGroup(strings.Split(addr, ","), opts)
		if c != nil {
			c.addr, c.tls = addr, opts.TLS
		}
		return c, err
	}
	c := &Client{peer: newPeer(addr, opts), dialTimeout: opts.DialTimeout, addr: addr, tls: opts.TLS}
	c.pool.New = func() any { return new(scratch) }
	ctx, cancel := context.WithTimeout(context.Background(), opts.DialTimeout)
	defer cancel()
	if err := c.peer.WaitConnected(ctx); err != nil {
		c.peer.Close()
		return nil, fmt.Errorf("commitd client: cannot reach the coordinator at %s: %w", addr, err)
	}
	return c, nil
}

func newPeer(addr string, opts Options) *mux.Peer {
	return mux.NewPeer(addr, mux.PeerOptions{
		Conn:  mux.Options{MaxInFlight: opts.MaxInFlight},
		Hello: wire.Hello{Role: wire.RoleClient},
		Dial:  link.Dialer(opts.TLS),
		Conns: opts.Conns,
	})
}

// Close closes the connections. Calls in flight end with Unknown.
func (c *Client) Close() error {
	if c.group != nil {
		return c.group.close()
	}
	return c.peer.Close()
}

// Run runs one whole transaction — prepare at every branch, decide, tell
// everyone — in one round trip to the coordinator, and returns its
// outcome.
//
// id must be a fresh UUIDv7 (uuid.NewV7), made just before the call and
// never used again, not even to retry a transaction whose outcome was
// Unknown: an id names one transaction. The coordinator rejects an id it
// can no longer check for reuse — older than it remembers finished
// transactions (its Remember less MaxIDAhead: 4 s by default) or than its
// own start, or too far ahead of its clock — with Rejected and Cause
// protocol.CauseStaleID, and an id that is not a UUIDv7 with CauseInvalid;
// nothing is started then, and a new id may be tried at once. A reused id
// it has forgotten is refused by the participants that remember it
// (Aborted, voted no).
//
// If ctx carries an OpenTelemetry span (trace.SpanContextFromContext), the
// Begin carries its trace context, and a coordinator that traces makes its
// span for the transaction a child of it (docs/tracing.md).
//
// The error is nil whenever the coordinator answered, whatever the outcome.
// When the answer cannot be had (the connection failed after the request
// was sent, or ctx ended first) Run returns Outcome Unknown with the error:
// the transaction may or may not have committed, and only the participants
// can tell. Never a guess: Aborted with an error means the request was
// never sent (errors.Is(err, ErrNotConnected)) or was refused before
// anything started.
func (c *Client) Run(ctx context.Context, id uuid.UUID, branches []Branch) (Result, error) {
	res := Result{Txn: id}
	if why := checkBranches(branches); why != "" {
		res.Outcome, res.Cause, res.Detail = Rejected, protocol.CauseInvalid, why
		return res, nil
	}
	sc := c.pool.Get().(*scratch)
	defer c.pool.Put(sc)
	sc.begin.Txn = id
	sc.begin.Trace = traceContext(ctx)
	sc.begin.Branches = sc.begin.Branches[:0]
	sc.names = sc.names[:0]
	for _, b := range branches {
		at := len(sc.names)
		sc.names = append(sc.names, b.Participant...)
		// If names grew, earlier branches keep pointing into the old
		// array, whose bytes are unchanged: still right.
		sc.begin.Branches = append(sc.begin.Branches, wire.Branch{Participant: sc.names[at:len(sc.names):len(sc.names)], Work: b.Work})
	}
	// The scratch keeps pointing at the caller's names and work until its
	// next use; clearing them here would cost a cache miss per call, and
	// the pool lets go of idle scratch at the next garbage collections.
	var f wire.Frame
	var err error
	if c.group != nil {
		// Not connected to one replica: the group moves on to the next,
		// and comes back while the peers redial.
		f, err = c.group.call(ctx, &sc.begin, sc.buf)
	} else {
		f, err = c.peer.Call(ctx, &sc.begin, sc.buf)
		if errors.Is(err, mux.ErrNotConnected) && c.waitConnected(ctx) {
			// Nothing was sent, so sending now is safe.
			f, err = c.peer.Call(ctx, &sc.begin, sc.buf)
		}
	}
	if err != nil {
		var re *mux.RemoteError
		switch {
		case errors.As(err, &re) && re.Code == wire.CodeInvalid:
			res.Outcome, res.Cause, res.Detail = Rejected, protocol.CauseInvalid, re.Message
			return res, nil
		case errors.As(err, &re) && re.Code == wire.CodeUnavailable:
			// Nothing was started.
			res.Outcome, res.Detail = Aborted, re.Message
			return res, err
		case errors.Is(err, mux.ErrNotConnected):
			res.Outcome, res.Detail = Aborted, "not sent: no connection to the coordinator"
			return res, err
		case errors.As(err, &re) && re.Code == wire.CodeNotLeader:
			// Nothing was started, but no replica would take it.
			res.Outcome, res.Detail = Aborted, "not sent: no coordinator replica leads"
			return res, err
		}
		res.Outcome, res.Detail = Unknown, err.Error()
		return res, err
	}
	sc.buf = f.Payload[:0]
	if err := sc.outcome.Decode(f); err != nil {
		res.Outcome, res.Detail = Unknown, err.Error()
		return res, err
	}
	res.Outcome = Outcome(sc.outcome.Outcome)
	res.Cause = sc.outcome.Cause
	if len(sc.outcome.Participant) > 0 {
		res.Participant = string(sc.outcome.Participant)
	}
	if len(sc.outcome.Detail) > 0 {
		res.Detail = string(sc.outcome.Detail)
	}
	return res, nil
}

// waitConnected waits up to DialTimeout (and within ctx) for a connection
// to come up, and reports whether one did.
func (c *Client) waitConnected(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	return c.peer.WaitConnected(ctx) == nil
}

// Outcome asks the coordinator where transaction id stands: committed,
// aborted (with the cause), unknown (a one-phase transaction whose
// participant did not answer), in flight (with each participant's state),
// or, when it holds no record, not found or expired — long after Run
// returned, for as long as the coordinator's outcome index keeps it (24 h
// by default: docs/operations.md). It is the question to ask after a Run
// that returned Unknown for want of an answer.
//
// It opens an admin connection of its own (with TLS, the client's
// certificate must be one the coordinator accepts from admin tools) and,
// for a replicated coordinator, asks the replicas in turn: a follower
// answers what its committed state proves and sends the rest to the
// leader. An error means no answer was had; it is a *RefusedError when
// the coordinator refused the question (a malformed or non-UUIDv7 id).
func (c *Client) Outcome(ctx context.Context, id uuid.UUID) (protocol.TxnStatus, error) {
	var st protocol.TxnStatus
	err := AdminArg(ctx, c.addr, "txn", id.String(), c.tls, &st)
	return st, err
}

// Admin asks the server at addr (a coordinator or a participant) for a
// report and decodes its JSON into v. kind is "status", "accounts",
// "outcomes" or "replicas" (a replica group's members). addr may list a
// group's replicas, ADDR1,ADDR2,...: the first that answers does.
func Admin(ctx context.Context, addr string, kind string, tlsCfg *tls.Config, v any) error {
	return AdminArg(ctx, addr, kind, "", tlsCfg, v)
}

// adminKinds are the admin requests by the names the command line uses.
var adminKinds = map[string]wire.AdminKind{
	"status": wire.AdminStatus, "accounts": wire.AdminAccounts, "outcomes": wire.AdminOutcomes,
	"txn": wire.AdminTxn, "in-doubt": wire.AdminInDoubt, "retry": wire.AdminRetry, "resolve": wire.AdminResolve,
	"replicas": wire.AdminReplicas,
}

// RefusedError is an admin request the server answered with a refusal:
// it understood the request and will not serve it as asked (an unknown
// participant, nothing to retry, a malformed id), or, NotLeader, it is a
// replica that does not lead (Message: the leader's address, if known).
type RefusedError struct {
	Message   string
	NotLeader bool
}

func (e *RefusedError) Error() string {
	if e.NotLeader {
		if e.Message == "" {
			return "not the leader, and no leader is known"
		}
		return "not the leader; the leader is " + e.Message
	}
	return "refused: " + e.Message
}

// AdminArg is Admin for the requests that take an argument: "txn" (a
// transaction id), "retry" (a transaction id or a participant's name),
// "resolve" (a participant.ResolveRequest as JSON) and "in-doubt"
// (none). For a list of replicas (ADDR1,ADDR2,...) the
// first that answers does; a refusal (a *mux.RemoteError that is not
// "not leader") is returned at once, as every replica would refuse alike.
func AdminArg(ctx context.Context, addr, kind, arg string, tlsCfg *tls.Config, v any) error {
	k, ok := adminKinds[kind]
	if !ok {
		return fmt.Errorf("unknown admin request %q (want status, accounts, outcomes, txn, in-doubt, retry, resolve or replicas)", kind)
	}
	if len(arg) > wire.MaxAdminArgLen {
		return fmt.Errorf("admin %s: argument of %d bytes; at most %d", kind, len(arg), wire.MaxAdminArgLen)
	}
	req := &wire.AdminRequest{Kind: k}
	if arg != "" {
		req.Arg = []byte(arg)
	}
	if strings.Contains(addr, ",") {
		// Replicas: the first that answers.
		var errs []error
		for _, a := range strings.Split(addr, ",") {
			err := adminOne(ctx, a, kind, req, tlsCfg, v)
			if err == nil {
				return nil
			}
			var re *RefusedError
			if errors.As(err, &re) && !re.NotLeader {
				return err
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	return adminOne(ctx, addr, kind, req, tlsCfg, v)
}

// ChangeParticipants asks the coordinator at addr to add a participant
// (change "add", arg "NAME=ADDR") or remove one ("remove", arg "NAME"), and
// decodes its participants afterwards into v. A removal is refused while
// any transaction in flight or in doubt names the participant. addr may
// list a replicated coordinator's replicas, ADDR1,ADDR2,...: the change
// goes to the leader as ChangeReplicas's does (a single address that
// cannot be reached fails at once).
func ChangeParticipants(ctx context.Context, addr, change, arg string, tlsCfg *tls.Config, v any) error {
	var k wire.AdminKind
	switch change {
	case "add":
		k = wire.AdminParticipantsAdd
	case "remove":
		k = wire.AdminParticipantsRemove
	default:
		return fmt.Errorf("unknown participant change %q (want add or remove)", change)
	}
	if len(arg) > wire.MaxAdminArgLen {
		return fmt.Errorf("admin participants %s: argument of %d bytes; at most %d", change, len(arg), wire.MaxAdminArgLen)
	}
	return atLeader(ctx, addr, "participants "+change, &wire.AdminRequest{Kind: k, Arg: []byte(arg)}, tlsCfg, v, true)
}

// ChangeReplicas asks a replica group's leader to add a replica (change
// "add", arg "ID=ADDR") or remove one ("remove", arg "ID"), and decodes
// the group's members afterwards into v. addrs lists replicas,
// ADDR1,ADDR2,...; a follower's "not leader, try X" is followed (the
// leader of a group being removed hands its leadership over and answers
// so too), and a replica that cannot be reached or knows no leader makes
// it try the next, until ctx ends.
func ChangeReplicas(ctx context.Context, addrs, change, arg string, tlsCfg *tls.Config, v any) error {
	var k wire.AdminKind
	switch change {
	case "add":
		k = wire.AdminReplicasAdd
	case "remove":
		k = wire.AdminReplicasRemove
	default:
		return fmt.Errorf("unknown replica change %q (want add or remove)", change)
	}
	return atLeader(ctx, addrs, "replicas "+change, &wire.AdminRequest{Kind: k, Arg: []byte(arg)}, tlsCfg, v, false)
}

// atLeader sends a change to a group's leader: addrs lists replicas,
// ADDR1,ADDR2,...; a follower's "not leader, try X" is followed, and a
// replica that cannot be reached or knows no leader makes it try the
// next, until ctx ends. With loneFails, a single address that cannot be
// reached (a coordinator that runs alone, and is down) fails at once.
func atLeader(ctx context.Context, addrs, what string, req *wire.AdminRequest, tlsCfg *tls.Config, v any, loneFails bool) error {
	list := strings.Split(addrs, ",")
	next, lastErr, hops := 0, error(nil), 0
	try := list[0]
	for {
		err := adminOne(ctx, try, what, req, tlsCfg, v)
		var refused *RefusedError
		var re *mux.RemoteError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &refused) && refused.NotLeader && refused.Message != "":
			if hops++; hops > len(list) {
				// Replicas naming each other while an election settles.
				select {
				case <-ctx.Done():
					return err
				case <-time.After(20 * time.Millisecond):
				}
			}
			try = refused.Message
			continue
		case errors.As(err, &refused) && !refused.NotLeader, errors.As(err, &re):
			return err // the leader refused: a clear answer, not to be retried
		}
		lastErr = err
		if ctx.Err() != nil || loneFails && len(list) == 1 && refused == nil && hops == 0 {
			return lastErr
		}
		next = (next + 1) % len(list)
		try = list[next]
		if next == 0 {
			// Every address tried: an election may be under way.
			select {
			case <-ctx.Done():
				return lastErr
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// adminOne sends one admin request to addr and decodes the JSON answer. A
// refusal (invalid, not leader) is a *RefusedError.
func adminOne(ctx context.Context, addr, what string, req *wire.AdminRequest, tlsCfg *tls.Config, v any) error {
	nc, err := link.Dialer(tlsCfg)(ctx, addr)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w", addr, err)
	}
	conn := mux.NewConn(nc, mux.Options{})
	defer conn.Close()
	if err := conn.Send(&wire.Hello{Role: wire.RoleAdmin}); err != nil {
		return err
	}
	var body []byte
	var resp wire.AdminResponse
	err = conn.Stream(ctx, req, func(f wire.Frame) error {
		if err := resp.Decode(f); err != nil {
			return err
		}
		body = append(body, resp.JSON...)
		return nil
	})
	var re *mux.RemoteError
	if errors.As(err, &re) && (re.Code == wire.CodeInvalid || re.Code == wire.CodeNotLeader) {
		return &RefusedError{Message: re.Message, NotLeader: re.Code == wire.CodeNotLeader}
	}
	if err != nil {
		return fmt.Errorf("admin %s from %s: %w", what, addr, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("admin %s from %s: bad JSON: %w", what, addr, err)
	}
	return nil
}

// checkBranches refuses, before anything is sent, what the wire cannot
// carry. What the coordinator must judge (names it knows, duplicates) it
// judges.
func checkBranches(branches []Branch) string {
	if len(branches) > protocol.MaxBranches {
		return fmt.Sprintf("%d branches; at most %d", len(branches), protocol.MaxBranches)
	}
	for _, b := range branches {
		if len(b.Participant) > protocol.MaxNameLen {
			return fmt.Sprintf("participant name of %d bytes; at most %d", len(b.Participant), protocol.MaxNameLen)
		}
		if len(b.Work) > protocol.MaxWorkLen {
			return fmt.Sprintf("work of %d bytes for %s; at most %d", len(b.Work), b.Participant, protocol.MaxWorkLen)
		}
	}
	return ""
}

// traceContext is the W3C trace context of the span in ctx, for the Begin;
// zero when ctx has none.
func traceContext(ctx context.Context) wire.TraceContext {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return wire.TraceContext{}
	}
	return wire.TraceContext{TraceID: sc.TraceID(), SpanID: sc.SpanID(), Flags: uint8(sc.TraceFlags())}
}
