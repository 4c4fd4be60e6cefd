// This file holds the operator's override for a transaction the protocol
// cannot settle (`commitd admin resolve`), its audit log, and the
// participant's answer to `commitd admin txn`.

package participant

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// ResolveRequest is the argument of an AdminResolve request, as JSON.
type ResolveRequest struct {
	Txn protocol.TxnID `json:"txn"`
	// Decision is "commit" or "abort".
	Decision string `json:"decision"`
	// Reason is the operator's, required: it goes into the audit log.
	Reason string `json:"reason"`
	// Seen lists the decisions for Txn the admin tool found elsewhere (at
	// the coordinator, in other participants' ledgers), in words: any
	// refuses the request. The tool is trusted to look, not to decide.
	Seen []string `json:"seen,omitempty"`
	// Unreached lists where the tool looked and had no answer, for the
	// audit log.
	Unreached []string `json:"unreached,omitempty"`
}

// MaxReasonLen bounds ResolveRequest.Reason.
const MaxReasonLen = 512

// AuditEntry is one line of the audit log (<data>/audit.log): an
// operator's resolve, applied or refused.
type AuditEntry struct {
	At  time.Time      `json:"at"`
	Txn protocol.TxnID `json:"txn"`
	// Decision is what the operator asked for.
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	// Who is the admin tool's certificate identity (with TLS), and Peer
	// its address.
	Who  string `json:"who,omitempty"`
	Peer string `json:"peer"`
	// Result is "applied", or "refused: " and why.
	Result    string   `json:"result"`
	Seen      []string `json:"seen,omitempty"`
	Unreached []string `json:"unreached,omitempty"`
}

// Resolved is the answer to an applied resolve.
type Resolved struct {
	Txn      protocol.TxnID `json:"txn"`
	Decision string         `json:"decision"`
	Audit    AuditEntry     `json:"audit"`
}

// audit is the participant's audit log: JSON lines, each synced before
// the request it records takes effect. Resolves are rare; the file is not
// retired.
type audit struct {
	path string
	mu   sync.Mutex // serializes appends, and resolves (one at a time)
}

// append writes e as one line and syncs it.
func (a *audit) append(e AuditEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, serr := os.Stat(a.path)
	created := errors.Is(serr, os.ErrNotExist)
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && created {
		// A new file's name is durable only once its directory is.
		var d *os.File
		if d, err = os.Open(filepath.Dir(a.path)); err == nil {
			err = d.Sync()
			_ = d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// entries returns the audit entries for id (all, for the zero id).
func (a *audit) entries(id protocol.TxnID) ([]AuditEntry, error) {
	f, err := os.Open(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	var out []AuditEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n, bad := 0, 0 // bad: the number of a line that did not parse, if any
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if bad != 0 {
			// Only the last line may be torn.
			return nil, fmt.Errorf("audit log %s: line %d is damaged", a.path, bad)
		}
		var e AuditEntry
		if err := json.Unmarshal(line, &e); err != nil {
			// A torn last line (a crash mid-append) is not an entry; its
			// resolve never took effect, as the sync came first.
			bad = n
			continue
		}
		if id == (protocol.TxnID{}) || e.Txn == id {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

func newAudit(dataDir string) *audit { return &audit{path: filepath.Join(dataDir, "audit.log")} }

// resolve applies an operator's decision to a transaction prepared here
// whose decision the protocol cannot deliver. It is refused — and the
// refusal recorded — unless every check passes:
//
//   - the admin tool is allowed to: with TLS, its certificate is one of
//     Config.OperatorIdentities (none by default: no resolves); without
//     TLS, it connects from this machine (loopback);
//   - the request names a decision, and a reason;
//   - the tool found no decision anywhere it looked (Seen is empty);
//   - this participant has no connection to any replica of its
//     coordinator: while it has one, its inquiries are answered — with
//     the decision, or with abort if the coordinator knows none (presumed
//     abort) — and `commitd admin retry` asks now;
//   - the transaction is prepared here and undecided (checked again, on
//     the pump goroutine, in the same turn the decision is applied).
//
// The audit entry is synced before the decision is applied. The decision
// then goes through the participant's machine as the coordinator's would:
// logged, applied to the resource, recorded in the ledger.
func (s *Server) resolve(c *mux.Conn, arg []byte) (Resolved, error) {
	var req ResolveRequest
	if err := json.Unmarshal(arg, &req); err != nil {
		return Resolved{}, fmt.Errorf("resolve: a malformed request: %v", err)
	}
	e := AuditEntry{At: time.Now().UTC(), Txn: req.Txn, Decision: req.Decision, Reason: req.Reason,
		Peer: c.RemoteAddr().String(), Seen: req.Seen, Unreached: req.Unreached}
	if st, ok := c.TLS(); ok && len(st.PeerCertificates) > 0 {
		e.Who = st.PeerCertificates[0].Subject.CommonName
	}
	s.audit.mu.Lock()
	defer s.audit.mu.Unlock()
	refuse := func(format string, a ...any) (Resolved, error) {
		why := fmt.Sprintf(format, a...)
		e.Result = "refused: " + why
		if err := s.audit.append(e); err != nil {
			return Resolved{}, err
		}
		return Resolved{}, errors.New(why)
	}
	var d protocol.Decision
	switch req.Decision {
	case "commit":
		d = protocol.DecisionCommit
	case "abort":
		d = protocol.DecisionAbort
	default:
		return refuse("decision %q: want commit or abort", req.Decision)
	}
	if why := s.mayResolve(c); why != "" {
		return refuse("%s", why)
	}
	if strings.TrimSpace(req.Reason) == "" || len(req.Reason) > MaxReasonLen {
		return refuse("a reason of 1 to %d bytes is required", MaxReasonLen)
	}
	if len(req.Seen) > 0 {
		return refuse("a decision exists: %s", strings.Join(req.Seen, "; "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	state := ""
	if err := s.pump.Do(ctx, func() { state, _ = s.machine.StateOf(req.Txn) }); err != nil {
		return Resolved{}, err
	}
	if state != "prepared" {
		return refuse("transaction %s is not prepared and undecided here (%s)", req.Txn, orNone(state))
	}
	if s.coordinatorConnected() {
		return refuse("the coordinator is connected: it answers this participant's inquiries (with abort if it knows no decision); ask now with commitd admin retry %s", req.Txn)
	}
	e.Result = "applied"
	if err := s.audit.append(e); err != nil {
		return Resolved{}, err
	}
	applied := false
	err := s.pump.Do(ctx, func() {
		// Again, in the turn that applies it: a decision may have come.
		if st, _ := s.machine.StateOf(req.Txn); st == "prepared" {
			s.machine.Step(engine.Message{Type: engine.MsgDecision, Txn: req.Txn, To: s.cfg.Name, Decision: d})
			applied = true
		}
	})
	if err != nil || !applied {
		// The entry says applied, but nothing was: say so, after it.
		why := "the decision arrived meanwhile"
		if err != nil {
			why = err.Error()
		}
		e.Result = "refused: " + why + " (the entry before this one did not take effect)"
		e.At = time.Now().UTC()
		if aerr := s.audit.append(e); aerr != nil {
			return Resolved{}, aerr
		}
		return Resolved{}, errors.New(why)
	}
	s.cfg.Logger.Warn("participant: transaction resolved by an operator (heuristic decision)", "name", s.cfg.Name,
		"txn", req.Txn.String(), "decision", req.Decision, "reason", req.Reason, "who", e.Who, "peer", e.Peer)
	return Resolved{Txn: req.Txn, Decision: req.Decision, Audit: e}, nil
}

func orNone(state string) string {
	if state == "" {
		return "unknown here: never prepared, or decided and forgotten; see commitd admin outcomes"
	}
	return state
}

// mayResolve says why the admin connection c may not resolve, or "".
func (s *Server) mayResolve(c *mux.Conn) string {
	if st, ok := c.TLS(); ok {
		if len(s.cfg.OperatorIdentities) == 0 {
			return "no operator identity is configured (--operator-identity): with TLS, resolves are refused"
		}
		if len(st.PeerCertificates) == 0 {
			return "no certificate"
		}
		cert := st.PeerCertificates[0]
		for _, id := range s.cfg.OperatorIdentities {
			if cert.Subject.CommonName == id || cert.VerifyHostname(id) == nil {
				return ""
			}
		}
		return fmt.Sprintf("certificate %q is not an operator identity", cert.Subject.CommonName)
	}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		return fmt.Sprintf("without TLS a resolve must come from this machine, not %v", c.RemoteAddr())
	}
	return ""
}

// coordinatorConnected reports whether this participant has a connection
// up to any replica of its coordinator.
func (s *Server) coordinatorConnected() bool {
	if s.coord != nil && s.coord.Stats().Connected > 0 {
		return true
	}
	for _, p := range s.replicas {
		if p.Stats().Connected > 0 {
			return true
		}
	}
	return false
}

// txnStatus is the participant's answer to `commitd admin txn ID
// --participant ADDR`: its own state for the transaction, from the
// machine or the ledger, and every resolve of it in the audit log.
func (s *Server) txnStatus(arg []byte) (protocol.TxnStatus, error) {
	id, err := uuid.Parse(string(arg))
	if err != nil {
		return protocol.TxnStatus{}, fmt.Errorf("malformed transaction id %q", arg)
	}
	st := protocol.TxnStatus{Txn: id}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	state := ""
	if err := s.pump.Do(ctx, func() { state, _ = s.machine.StateOf(id) }); err != nil {
		return st, err
	}
	switch state {
	case "committed", "committing":
		st.State = protocol.TxnCommitted
	case "aborted", "aborting":
		st.State = protocol.TxnAborted
	case "":
		var last protocol.Decision
		err := s.ledger.each(func(x protocol.TxnID, d protocol.Decision) error {
			if x == id {
				last = d
			}
			return nil
		})
		if err != nil {
			return st, err
		}
		switch last {
		case protocol.DecisionCommit:
			st.State = protocol.TxnCommitted
		case protocol.DecisionAbort:
			st.State = protocol.TxnAborted
		default:
			st.State = protocol.TxnNotFound
		}
	default:
		st.State = protocol.TxnInFlight
	}
	st.Participants = []protocol.TxnParticipant{{Name: s.cfg.Name, State: orNone(state)}}
	st.Detail = fmt.Sprintf("as participant %s sees it", s.cfg.Name)
	resolves, err := s.audit.entries(id)
	if err != nil {
		return st, err
	}
	for _, r := range resolves {
		st.Resolves = append(st.Resolves, protocol.Resolve{At: r.At, Decision: r.Decision, Reason: r.Reason,
			Who: r.Who, Peer: r.Peer, Result: r.Result, Where: s.cfg.Name})
	}
	return st, nil
}
