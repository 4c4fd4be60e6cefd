// Package refservice is the reference service of docs/http-participant.md:
// a small account store behind the HTTP participant contract, written with
// Go's standard library only, so that it reads as a model for a service in
// any language. cmd/refservice runs it; the tests and the demo use it.
//
// A branch's work is either a JSON object {"account": "alice", "delta":
// -5} — the amount is reserved at prepare (a balance never goes below
// zero, counting what prepared debits hold) and applied at commit — or
// any other bytes, which are kept as they are and change no balance (the
// load generator's work is opaque to it).
//
// Every change is one JSON line appended to a journal file and synced
// (one fdatasync for all the changes that arrive while the last one
// syncs) before the answer goes out — the answer to a duplicate too, so
// that nothing is said that a crash could take back. At start the
// journal is read back; a torn last line (a crash mid-write) is cut.
// The store remembers every committed and aborted transaction for its
// whole life: a reference, not a production store.
package refservice

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
)

// transfer is the work the store understands.
type transfer struct {
	Account string `json:"account"`
	Delta   int64  `json:"delta"`
}

// event is one journal line.
type event struct {
	Op       string           `json:"op"` // seed, prepare, commit, abort
	Txn      string           `json:"txn,omitempty"`
	Work     []byte           `json:"work,omitempty"`
	Balances map[string]int64 `json:"balances,omitempty"`
}

// Store is the service's state and its journal.
type Store struct {
	mu   sync.Mutex
	cond *sync.Cond // signalled when synced advances or the journal fails
	f    *os.File

	prepared  map[string][]byte // txn → work
	committed map[string]bool
	aborted   map[string]bool
	balances  map[string]int64
	reserved  map[string]int64 // the debits prepared transactions hold

	// Group commit: lines wait in buf; written counts every line ever
	// appended, synced those durable; one caller at a time writes.
	buf             []byte
	written, synced uint64
	syncing         bool
	err             error // a failed write or sync: every later call fails
}

// Open reads the journal at path, or creates it holding the balances.
func Open(path string, balances map[string]int64) (*Store, error) {
	s := &Store{
		prepared:  map[string][]byte{},
		committed: map[string]bool{},
		aborted:   map[string]bool{},
		balances:  map[string]int64{},
		reserved:  map[string]int64{},
	}
	s.cond = sync.NewCond(&s.mu)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	s.f = f
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	good, err := s.replay(data)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if good < len(data) { // a torn last line
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return nil, err
		}
	}
	if _, err := f.Seek(int64(good), io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if good == 0 {
		s.mu.Lock()
		s.apply(event{Op: "seed", Balances: balances})
		s.append(event{Op: "seed", Balances: balances})
		err := s.flush()
		s.mu.Unlock()
		if err != nil {
			f.Close()
			return nil, err
		}
		// The file is new: make its name durable too.
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			err = d.Sync()
			d.Close()
			if err != nil {
				f.Close()
				return nil, err
			}
		}
	}
	return s, nil
}

// Close closes the journal.
func (s *Store) Close() error { return s.f.Close() }

// replay applies every whole line of data and returns how many bytes
// those were. A bad line that is not the last is corruption.
func (s *Store) replay(data []byte) (int, error) {
	good := 0
	for line := 1; good < len(data); line++ {
		n := bytes.IndexByte(data[good:], '\n')
		if n < 0 {
			return good, nil // torn: no newline
		}
		var e event
		if err := json.Unmarshal(data[good:good+n], &e); err != nil {
			if good+n+1 == len(data) {
				return good, nil // torn: the last line
			}
			return 0, fmt.Errorf("journal line %d is damaged: %v", line, err)
		}
		s.apply(e)
		good += n + 1
	}
	return good, nil
}

// apply changes the state by one event (already checked).
func (s *Store) apply(e event) {
	switch e.Op {
	case "seed":
		for a, b := range e.Balances {
			s.balances[a] = b
		}
	case "prepare":
		s.prepared[e.Txn] = append([]byte{}, e.Work...) // empty work is "" and omitted in the journal
		if t, ok := parse(e.Work); ok && t.Delta < 0 {
			s.reserved[t.Account] -= t.Delta
		}
	case "commit":
		if t, ok := parse(s.prepared[e.Txn]); ok {
			if t.Delta < 0 {
				s.reserved[t.Account] += t.Delta
			}
			s.balances[t.Account] += t.Delta
		}
		delete(s.prepared, e.Txn)
		s.committed[e.Txn] = true
	case "abort":
		if t, ok := parse(s.prepared[e.Txn]); ok && t.Delta < 0 {
			s.reserved[t.Account] += t.Delta
		}
		delete(s.prepared, e.Txn)
		s.aborted[e.Txn] = true
	}
}

// parse reads work as a transfer; other work is opaque.
func parse(work []byte) (transfer, bool) {
	var t transfer
	if len(work) == 0 || work[0] != '{' || json.Unmarshal(work, &t) != nil || t.Account == "" {
		return t, false
	}
	return t, true
}

// append queues e's line for the next flush (s.mu held).
func (s *Store) append(e event) {
	b, _ := json.Marshal(e)
	s.buf = append(append(s.buf, b...), '\n')
	s.written++
}

// flush returns once every line appended so far is durable (s.mu held;
// released while writing).
func (s *Store) flush() error {
	want := s.written
	for s.synced < want && s.err == nil {
		if s.syncing {
			s.cond.Wait()
			continue
		}
		s.syncing = true
		buf, upto := s.buf, s.written
		s.buf = nil
		s.mu.Unlock()
		_, err := s.f.Write(buf)
		if err == nil {
			err = s.f.Sync()
		}
		s.mu.Lock()
		s.syncing = false
		if err != nil {
			s.err = fmt.Errorf("journal: %w", err) // never retried
		} else {
			s.synced = upto
		}
		s.cond.Broadcast()
	}
	return s.err
}

// Prepare holds work for txn and says yes, or says no with the reason.
func (s *Store) Prepare(txn string, work []byte) (yes bool, reason string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.isPrepared(txn):
		yes = true // a duplicate
	case s.committed[txn]:
		reason = "already committed"
	case s.aborted[txn]:
		reason = "aborted" // an abort overtook this prepare
	default:
		if t, ok := parse(work); ok && t.Delta < 0 && s.balances[t.Account]-s.reserved[t.Account]+t.Delta < 0 {
			reason = fmt.Sprintf("account %q has too little: %d, of which %d held", t.Account, s.balances[t.Account], s.reserved[t.Account])
			break
		}
		e := event{Op: "prepare", Txn: txn, Work: work}
		s.apply(e)
		s.append(e)
		yes = true
	}
	return yes, reason, s.flush()
}

func (s *Store) isPrepared(txn string) bool {
	_, ok := s.prepared[txn]
	return ok
}

// ErrConflict is a decision the store cannot take: a commit of a
// transaction it never prepared or aborted, or an abort of one committed.
var ErrConflict = errors.New("conflict")

// Commit applies a prepared transaction.
func (s *Store) Commit(txn string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.committed[txn]:
	case !s.isPrepared(txn):
		what := "never prepared"
		if s.aborted[txn] {
			what = "aborted"
		}
		return fmt.Errorf("%w: commit of %s, which was %s", ErrConflict, txn, what)
	default:
		e := event{Op: "commit", Txn: txn}
		s.apply(e)
		s.append(e)
	}
	return s.flush()
}

// Abort releases a prepared transaction, or remembers the abort of one it
// never saw so that a late prepare of it is refused.
func (s *Store) Abort(txn string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.aborted[txn]:
	case s.committed[txn]:
		return fmt.Errorf("%w: abort of %s, which was committed", ErrConflict, txn)
	default:
		e := event{Op: "abort", Txn: txn}
		s.apply(e)
		s.append(e)
	}
	return s.flush()
}

// State is what GET /state answers: balances and the transactions decided.
type State struct {
	Balances  map[string]int64 `json:"balances"`
	Total     int64            `json:"total"`
	Prepared  []string         `json:"prepared"`
	Committed []string         `json:"committed"`
	Aborted   int              `json:"aborted"`
}

// Snapshot returns the state, once everything it shows is durable.
func (s *Store) Snapshot() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Balances: map[string]int64{}, Prepared: keys(s.prepared), Committed: keys(s.committed), Aborted: len(s.aborted)}
	for a, b := range s.balances {
		st.Balances[a] = b
		st.Total += b
	}
	return st, s.flush()
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// txnPattern is a transaction id as the participant sends it.
var txnPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Handler serves the contract over s:
//
//	POST /prepare  {"txn", "work"} → 200 {"vote": "yes"} | {"vote": "no", "reason"}
//	POST /commit   {"txn"}         → 200 {}, 409 for a conflict
//	POST /abort    {"txn"}         → 200 {}, 409 for a conflict
//	GET  /prepared                 → 200 {"prepared": [...]}
//	GET  /state                    → 200 State (for tests and people)
//
// A bad request is a 400, a failed journal a 500: the participant votes
// no or retries.
func Handler(s *Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /prepare", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Txn  string `json:"txn"`
			Work []byte `json:"work"`
		}
		if !decode(w, r, &req) {
			return
		}
		yes, reason, err := s.Prepare(req.Txn, req.Work)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case yes:
			reply(w, map[string]string{"vote": "yes"})
		default:
			reply(w, map[string]string{"vote": "no", "reason": reason})
		}
	})
	decision := func(do func(string) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Txn string `json:"txn"`
			}
			if !decode(w, r, &req) {
				return
			}
			switch err := do(req.Txn); {
			case errors.Is(err, ErrConflict):
				http.Error(w, err.Error(), http.StatusConflict)
			case err != nil:
				http.Error(w, err.Error(), http.StatusInternalServerError)
			default:
				reply(w, struct{}{})
			}
		}
	}
	mux.HandleFunc("POST /commit", decision(s.Commit))
	mux.HandleFunc("POST /abort", decision(s.Abort))
	mux.HandleFunc("GET /prepared", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Snapshot()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, map[string][]string{"prepared": st.Prepared})
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Snapshot()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, st)
	})
	return mux
}

// decode reads a JSON request of at most 1 MiB with a well-formed txn.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err == nil && len(body) > 1<<20 {
		err = errors.New("request longer than 1 MiB")
	}
	if err == nil {
		err = json.Unmarshal(body, v)
	}
	if err == nil {
		var t struct {
			Txn string `json:"txn"`
		}
		_ = json.Unmarshal(body, &t)
		if !txnPattern.MatchString(t.Txn) {
			err = fmt.Errorf("txn %q: want a lower-case UUID", t.Txn)
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriter(w)
	_ = json.NewEncoder(bw).Encode(v)
	_ = bw.Flush()
}
