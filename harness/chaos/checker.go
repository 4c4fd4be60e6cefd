package chaos

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// State is where a transaction stands at one participant, as its ledger
// (`commitd admin outcomes`) says. A transaction a participant never
// prepared, or voted no or read-only on, is absent: absence means "not
// committed here".
type State uint8

// The states a ledger reports.
const (
	StateCommitted State = iota + 1
	StateAborted
	StatePrepared // in doubt: voted yes, no decision yet
)

var stateNames = [...]string{"absent", "committed", "aborted", "prepared"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ParseState turns an `admin outcomes` word into a State.
func ParseState(s string) (State, error) {
	for i, n := range stateNames[1:] {
		if n == s {
			return State(i + 1), nil
		}
	}
	return 0, fmt.Errorf("chaos: unknown ledger state %q", s)
}

// Told is what a client was told about a transaction.
type Told uint8

// The answers a client can get (client.Outcome, as the ack log spells it).
const (
	ToldCommitted Told = iota + 1
	ToldAborted
	ToldUnknown  // the answer was lost: it may or may not have committed
	ToldRejected // refused before anything started
)

var toldNames = [...]string{"?", "committed", "aborted", "unknown", "rejected"}

func (t Told) String() string {
	if int(t) < len(toldNames) {
		return toldNames[t]
	}
	return fmt.Sprintf("Told(%d)", uint8(t))
}

// Ack is one transaction as the client saw it: one line of
// `commitd bench --ack-log`.
type Ack struct {
	Txn  uuid.UUID
	Told Told
	// Participants are the transaction's branches, comma-separated (one
	// string shared by every ack with the same set, to keep a long run's
	// history small).
	Participants string
}

// Branches returns the participants of the transaction.
func (a Ack) Branches() []string { return strings.Split(a.Participants, ",") }

// ParseAckLog reads a whole ack log into memory (see EachAck).
func ParseAckLog(r io.Reader) ([]Ack, error) {
	var acks []Ack
	err := EachAck(r, func(a Ack) error {
		acks = append(acks, a)
		return nil
	})
	return acks, err
}

// EachAck reads an ack log — one line per transaction,
// "<uuid> <outcome> <participant>,<participant>..." — and calls fn for each
// line, so that a log of millions of lines is never held in memory. A last
// line without its newline (the writer died mid-line) is ignored; any other
// malformed line is an error, as is an error from fn.
func EachAck(r io.Reader, fn func(Ack) error) error {
	br := bufio.NewReaderSize(r, 1<<16)
	intern := map[string]string{}
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if err == io.EOF {
			return nil // an unterminated tail is a torn write
		}
		if err != nil {
			return fmt.Errorf("chaos: ack log line %d: %w", n, err)
		}
		f0, f1, f2, ok := fields3(line)
		if !ok {
			return fmt.Errorf("chaos: ack log line %d: %q: want <uuid> <outcome> <participants>", n, line)
		}
		id, err := uuid.ParseBytes(f0)
		if err != nil {
			return fmt.Errorf("chaos: ack log line %d: %w", n, err)
		}
		told := Told(0)
		for i, name := range toldNames[1:] {
			if string(f1) == name {
				told = Told(i + 1)
			}
		}
		if told == 0 {
			return fmt.Errorf("chaos: ack log line %d: unknown outcome %q", n, f1)
		}
		parts, seen := intern[string(f2)]
		if !seen {
			parts = string(f2)
			intern[parts] = parts
		}
		if err := fn(Ack{Txn: id, Told: told, Participants: parts}); err != nil {
			return err
		}
	}
}

// fields3 splits an ack log line into its three space-separated fields,
// without allocating.
func fields3(line []byte) (id, outcome, parts []byte, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	a := bytes.IndexByte(line, ' ')
	if a <= 0 {
		return nil, nil, nil, false
	}
	b := bytes.IndexByte(line[a+1:], ' ')
	if b <= 0 {
		return nil, nil, nil, false
	}
	b += a + 1
	if b+1 >= len(line) || bytes.IndexByte(line[b+1:], ' ') >= 0 {
		return nil, nil, nil, false
	}
	return line[:a], line[a+1 : b], line[b+1:], true
}

// History is everything the checker looks at, gathered once the load has
// ended and recovery has had its chance.
type History struct {
	// Acks are the client's answers, one per transaction it ran; AckLog,
	// if set, holds more of them as an ack log (EachAck), read once.
	Acks   []Ack
	AckLog io.Reader
	// EveryBranchWrites says that no branch of any acknowledged
	// transaction was read-only, so a committed transaction must appear
	// committed in the ledger of every one of its participants. When
	// false, absence from a ledger is accepted for a committed transaction
	// (a read-only branch is never in a ledger).
	EveryBranchWrites bool
	// Ledgers maps each participant to its ledger: every transaction it
	// decided, and every one it holds prepared.
	Ledgers map[string]map[uuid.UUID]State

	// StartTotal is the sum of every balance before the run.
	StartTotal int64
	// Totals are each participant's sum of committed balances.
	Totals map[string]int64
	// MinBalance is each participant's lowest account balance, where known
	// (read from its data directory after the run).
	MinBalance map[string]int64
	// RecoveredTotals are each participant's totals after a restart from
	// its data directory alone, where known: they must equal Totals (what
	// the running server reported), or something it had applied was not
	// durable.
	RecoveredTotals map[string]int64
	// Prepared is each participant's count of transactions holding the
	// resource (voted yes, undecided).
	Prepared map[string]int

	// CoordinatorInDoubt counts commit decisions not yet acknowledged by
	// every participant; CoordinatorInFlight counts transactions begun and
	// not yet answered.
	CoordinatorInDoubt, CoordinatorInFlight int
	// ProbesRun and ProbesCommitted count the fresh transactions run after
	// recovery, to show the cluster still commits.
	ProbesRun, ProbesCommitted int
}

// Kind is the invariant a violation breaks.
type Kind uint8

// The invariants checked.
const (
	// Atomicity: no transaction committed at one participant and aborted
	// (or, when every branch writes, missing) at another.
	Atomicity Kind = iota + 1
	// Durability: what the client was told holds — told committed means
	// committed at every participant; told aborted (or rejected) means
	// committed nowhere.
	Durability
	// Conservation: the balances add up to the starting total and none is
	// negative.
	Conservation
	// Liveness: nothing is left in doubt, and the cluster still commits.
	Liveness
)

// Kinds lists every Kind, in report order.
var Kinds = []Kind{Atomicity, Durability, Conservation, Liveness}

var kindNames = [...]string{"?", "atomicity", "durability", "conservation", "liveness"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Violation is one broken invariant.
type Violation struct {
	Kind   Kind
	Txn    uuid.UUID // zero when the violation is not about one transaction
	Detail string
}

func (v Violation) String() string {
	if v.Txn == (uuid.UUID{}) {
		return fmt.Sprintf("%v: %s", v.Kind, v.Detail)
	}
	return fmt.Sprintf("%v: %v: %s", v.Kind, v.Txn, v.Detail)
}

// Result is what Check found.
type Result struct {
	Violations []Violation
	// Told counts the acknowledgements by answer.
	Told map[Told]int
	// UnknownCommitted and UnknownAborted count transactions whose client
	// was told "unknown" and which recovery then finished one way
	// (committed everywhere) or the other (committed nowhere).
	UnknownCommitted, UnknownAborted int
	// Unacknowledged counts transactions in some ledger that no
	// acknowledgement names (there should be none: the client logs every
	// transaction it sends).
	Unacknowledged int
}

// Failed reports whether any invariant of kind k was broken.
func (r *Result) Failed(k Kind) bool {
	for _, v := range r.Violations {
		if v.Kind == k {
			return true
		}
	}
	return false
}

// OK reports whether every invariant held.
func (r *Result) OK() bool { return len(r.Violations) == 0 }

// maxPerKind bounds the violations kept of each kind: a broken run can
// break an invariant for every transaction, and the first few tell.
const maxPerKind = 20

// Check checks a history against the four invariants. It never stops at
// the first violation: every kind is checked, and up to maxPerKind
// violations of each are reported (with a count of the rest). The error is
// a malformed ack log; the result is then incomplete.
func Check(h *History) (Result, error) {
	r := Result{Told: map[Told]int{}}
	counts := map[Kind]int{}
	add := func(k Kind, txn uuid.UUID, format string, args ...any) {
		counts[k]++
		if counts[k] <= maxPerKind {
			r.Violations = append(r.Violations, Violation{Kind: k, Txn: txn, Detail: fmt.Sprintf(format, args...)})
		}
	}
	names := make([]string, 0, len(h.Ledgers))
	for p := range h.Ledgers {
		names = append(names, p)
	}
	sort.Strings(names)

	// Atomicity over every transaction any ledger names.
	seen := map[uuid.UUID]bool{}
	for _, p := range names {
		for txn := range h.Ledgers[p] {
			if seen[txn] {
				continue
			}
			seen[txn] = true
			var committed, aborted []string
			for _, q := range names {
				switch h.Ledgers[q][txn] {
				case StateCommitted:
					committed = append(committed, q)
				case StateAborted:
					aborted = append(aborted, q)
				}
			}
			if len(committed) > 0 && len(aborted) > 0 {
				add(Atomicity, txn, "committed at %s, aborted at %s", strings.Join(committed, ","), strings.Join(aborted, ","))
			}
		}
	}

	// Durability (and atomicity where every branch writes) over what the
	// clients were told.
	acked := make(map[uuid.UUID]bool, len(seen))
	for txn := range seen {
		acked[txn] = false
	}
	// Ack.Participants → its branches and their ledgers: one lookup per
	// ack, not one per branch (a long run's ack log has tens of millions
	// of lines).
	type branchSet struct {
		names   []string
		ledgers []map[uuid.UUID]State
	}
	split := map[string]branchSet{}
	var told [len(toldNames)]int
	// where lists the branches committed (or not) at their participant,
	// for a violation's text.
	where := func(txn uuid.UUID, branches []string, committed bool) string {
		var out []string
		for _, p := range branches {
			s := h.Ledgers[p][txn]
			switch {
			case committed && s == StateCommitted:
				out = append(out, p)
			case !committed && s != StateCommitted:
				out = append(out, p+" ("+s.String()+")")
			}
		}
		return strings.Join(out, ", ")
	}
	check := func(a Ack) error {
		if int(a.Told) < len(told) {
			told[a.Told]++
		}
		if len(acked) > 0 {
			if _, ok := acked[a.Txn]; ok {
				acked[a.Txn] = true
			}
		}
		bs, ok := split[a.Participants]
		if !ok {
			bs.names = a.Branches()
			for _, p := range bs.names {
				l, ok := h.Ledgers[p]
				if !ok {
					add(Durability, a.Txn, "participant %q has no ledger in the history", p)
				}
				bs.ledgers = append(bs.ledgers, l)
			}
			split[a.Participants] = bs
		}
		branches := bs.names
		committed, missing := 0, 0
		for _, l := range bs.ledgers {
			if l[a.Txn] == StateCommitted {
				committed++
			} else {
				missing++
			}
		}
		switch a.Told {
		case ToldCommitted:
			if missing > 0 && (h.EveryBranchWrites || committed == 0) {
				add(Durability, a.Txn, "client told committed; not committed at %s", where(a.Txn, branches, false))
			}
		case ToldAborted, ToldRejected:
			if committed > 0 {
				add(Durability, a.Txn, "client told %v; committed at %s", a.Told, where(a.Txn, branches, true))
			}
		case ToldUnknown:
			switch {
			case committed == 0:
				r.UnknownAborted++
			case missing == 0:
				r.UnknownCommitted++
			}
		}
		if h.EveryBranchWrites && committed > 0 && missing > 0 && a.Told != ToldCommitted {
			add(Atomicity, a.Txn, "committed at %s; not at %s", where(a.Txn, branches, true), where(a.Txn, branches, false))
		}
		return nil
	}
	for _, a := range h.Acks {
		check(a)
	}
	var err error
	if h.AckLog != nil {
		err = EachAck(h.AckLog, check)
	}
	for _, ok := range acked {
		if !ok {
			r.Unacknowledged++
		}
	}
	for i, n := range told {
		if n > 0 {
			r.Told[Told(i)] = n
		}
	}

	for _, p := range sortedKeys(h.RecoveredTotals) {
		if rt, t := h.RecoveredTotals[p], h.Totals[p]; rt != t {
			add(Durability, uuid.UUID{}, "participant %s: total %d while running, %d after a restart from disk", p, t, rt)
		}
	}

	// Conservation.
	var sum int64
	for _, p := range names {
		t, ok := h.Totals[p]
		if !ok {
			add(Conservation, uuid.UUID{}, "no total from participant %s", p)
		}
		sum += t
	}
	if sum != h.StartTotal {
		add(Conservation, uuid.UUID{}, "balances sum to %d, started at %d (%+d)", sum, h.StartTotal, sum-h.StartTotal)
	}
	for _, p := range sortedKeys(h.MinBalance) {
		if m := h.MinBalance[p]; m < 0 {
			add(Conservation, uuid.UUID{}, "participant %s has a balance of %d", p, m)
		}
	}

	// Liveness.
	for _, p := range names {
		for txn, s := range h.Ledgers[p] {
			if s == StatePrepared {
				add(Liveness, txn, "still prepared at %s", p)
			}
		}
	}
	for _, p := range sortedKeys(h.Prepared) {
		if n := h.Prepared[p]; n > 0 {
			add(Liveness, uuid.UUID{}, "participant %s holds %d prepared transactions", p, n)
		}
	}
	if h.CoordinatorInDoubt > 0 || h.CoordinatorInFlight > 0 {
		add(Liveness, uuid.UUID{}, "coordinator: %d commit decisions undelivered, %d transactions in flight",
			h.CoordinatorInDoubt, h.CoordinatorInFlight)
	}
	if h.ProbesRun == 0 || h.ProbesCommitted < h.ProbesRun {
		add(Liveness, uuid.UUID{}, "%d of %d fresh transactions committed after recovery", h.ProbesCommitted, h.ProbesRun)
	}

	for _, k := range Kinds {
		if n := counts[k] - maxPerKind; n > 0 {
			r.Violations = append(r.Violations, Violation{Kind: k, Detail: fmt.Sprintf("... and %d more", n)})
		}
	}
	return r, err
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
