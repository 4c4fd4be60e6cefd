package coordinator

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/console"
	"github.com/commitd/commitd/internal/obs"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// The web console's API (docs/console.md), on the --http address only.
// Each answer comes from what the admin requests read (admin.go,
// members.go) — the shards through their pumps, the outcome index, the
// participants' connections, the raft group — and every list is paged:
// an answer never holds the whole table, however many transactions are in
// flight.
const (
	// consolePage is the in-flight and in-doubt lists' default page, and
	// consoleMaxPage the largest a request may ask for.
	consolePage    = 50
	consoleMaxPage = 200
)

// consoleRoutes are the console's page and API, for obs.Start.
func (s *Server) consoleRoutes() []obs.Route {
	api := func(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				s.consoleError(w, err)
			}
		})
	}
	return []obs.Route{
		{Pattern: "GET /{$}", Handler: console.Index()},
		{Pattern: "GET /console/", Handler: console.Assets()},
		{Pattern: "GET /api/summary", Handler: api(s.apiSummary)},
		{Pattern: "GET /api/txn/{id}", Handler: api(s.apiTxn)},
		{Pattern: "GET /api/inflight", Handler: api(s.apiInFlight)},
		{Pattern: "GET /api/in-doubt", Handler: api(s.apiInDoubt)},
		{Pattern: "GET /api/participants", Handler: api(s.apiParticipants)},
		{Pattern: "GET /api/group", Handler: api(s.apiGroup)},
		{Pattern: "/api/", Handler: console.NotFound("/api/summary", "/api/txn/ID", "/api/inflight", "/api/in-doubt", "/api/participants", "/api/group")},
	}
}

// consoleError answers err with the status that says what it is: bad
// input 400, a replica that does not lead 421 with the leader's address,
// a coordinator too busy to answer in time 503, anything else 500.
func (s *Server) consoleError(w http.ResponseWriter, err error) {
	var ae *errAdmin
	var nl *notLeaderError
	switch {
	case errors.As(err, &nl):
		console.WriteJSON(w, http.StatusMisdirectedRequest, console.Error{Error: notLeading, Leader: nl.Leader})
	case errors.As(err, &ae) && ae.code == wire.CodeNotLeader:
		console.WriteJSON(w, http.StatusMisdirectedRequest, console.Error{Error: notLeading, Leader: s.leaderAddr()})
	case errors.As(err, &ae) && ae.code == wire.CodeInvalid:
		console.WriteError(w, http.StatusBadRequest, "%s", ae.msg)
	case errors.Is(err, context.DeadlineExceeded):
		console.WriteError(w, http.StatusServiceUnavailable, "the coordinator did not answer within %v: %v", adminTimeout, err)
	default:
		console.WriteError(w, http.StatusInternalServerError, "%v", err)
	}
}

// notLeading is a follower's answer to what only the leader's shards know.
// The leader's address is its listener's (the one replicas know), not its
// --http address.
const notLeading = "this replica does not lead: the leader (its listen address in \"leader\") answers this on its own --http address"

// leaderAddr is the address of the group's leader as this replica knows
// it ("" when it knows none, leads itself, or runs alone).
func (s *Server) leaderAddr() string {
	if s.rep == nil {
		return ""
	}
	st := s.rep.status.Load()
	if st.leader == 0 || st.leader == s.rep.id {
		return ""
	}
	return s.rep.mem.Load().addrs[st.leader]
}

// Summary is /api/summary: the status (admin status) and the last minutes'
// rates and latencies.
type Summary struct {
	At     time.Time `json:"at"`
	Status Status    `json:"status"`
	Rates  Rates     `json:"rates"`
}

func (s *Server) apiSummary(w http.ResponseWriter, _ *http.Request) error {
	now := s.outcomes.now()
	console.WriteJSON(w, http.StatusOK, Summary{At: now, Status: s.Status(), Rates: report(s.rates, now.UnixMilli())})
	return nil
}

// apiTxn answers /api/txn/ID as admin txn does; an id that is malformed
// (400), unknown (404) or older than the outcome index (410) is an error
// whose body also carries the status, with its words.
func (s *Server) apiTxn(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	st, err := s.txnStatus(ctx, []byte(r.PathValue("id")))
	if err != nil {
		return err
	}
	type notFound struct {
		console.Error
		protocol.TxnStatus
	}
	switch st.State {
	case protocol.TxnNotFound:
		console.WriteJSON(w, http.StatusNotFound, notFound{console.Error{Error: "unknown transaction id: " + st.Detail}, st})
	case protocol.TxnExpired:
		console.WriteJSON(w, http.StatusGone, notFound{console.Error{Error: "expired transaction id: " + st.Detail}, st})
	default:
		console.WriteJSON(w, http.StatusOK, st)
	}
	return nil
}

// InFlightPage is /api/inflight: a page of the transactions the shards
// hold (voting, deciding, delivering or ending), in id order after the
// id the request names (?after=ID; none: from the first), at most
// ?limit= (default 50, at most 200). Next is the id to ask after for the
// next page ("" at the end).
type InFlightPage struct {
	Total int                  `json:"total"`
	Limit int                  `json:"limit"`
	Txns  []protocol.TxnStatus `json:"txns"`
	Next  string               `json:"next"`
}

func (s *Server) apiInFlight(w http.ResponseWriter, r *http.Request) error {
	limit, err := console.IntParam(r, "limit", consolePage, consoleMaxPage)
	if err != nil {
		return invalid("%v", err)
	}
	var after *protocol.TxnID
	if a := r.URL.Query().Get("after"); a != "" {
		id, err := ParseTxnID(a)
		if err != nil {
			return invalid("after: %v", err)
		}
		after = &id
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	limit = max(limit, 1)
	page, err := s.inFlightPage(ctx, after, limit)
	if err != nil {
		return err
	}
	page.Limit = limit
	console.WriteJSON(w, http.StatusOK, page)
	return nil
}

// inFlightPage asks every shard for its first limit transactions after
// after, and keeps the first limit of them all.
func (s *Server) inFlightPage(ctx context.Context, after *protocol.TxnID, limit int) (InFlightPage, error) {
	pumps, shards := s.pumps, s.shards
	if s.rep != nil {
		g := s.rep.cur.Load()
		if g == nil {
			return InFlightPage{}, &errAdmin{code: wire.CodeNotLeader}
		}
		pumps, shards = g.pumps, g.shards
	}
	page := InFlightPage{Txns: []protocol.TxnStatus{}}
	var all []engine.TxnView
	for i, p := range pumps {
		var n int
		if err := p.Do(ctx, func() { all, n = shards[i].InFlight(all, after, limit) }); err != nil {
			return page, fmt.Errorf("asking shard %d: %w", i, err)
		}
		page.Total += n
	}
	slices.SortFunc(all, func(a, b engine.TxnView) int { return bytes.Compare(a.Txn[:], b.Txn[:]) })
	if len(all) > limit {
		all = all[:limit]
		page.Next = all[limit-1].Txn.String()
	}
	for _, v := range all {
		page.Txns = append(page.Txns, inFlight(v.Txn, v))
	}
	return page, nil
}

// InDoubtPage is /api/in-doubt: page ?page= (from 0) of the in-doubt
// report (admin in-doubt: commits decided and durable, not yet
// acknowledged by every participant that voted yes, oldest decision
// first), ?limit= (default 50, at most 200) a page. The report lists the
// oldest 1,000 (Listed); Total counts them all.
type InDoubtPage struct {
	Total   int                  `json:"total"`
	Listed  int                  `json:"listed"`
	Page    int                  `json:"page"`
	Pages   int                  `json:"pages"`
	Limit   int                  `json:"limit"`
	Txns    []protocol.TxnStatus `json:"txns"`
	Waiting map[string]int       `json:"waiting"`
}

func (s *Server) apiInDoubt(w http.ResponseWriter, r *http.Request) error {
	limit, err := console.IntParam(r, "limit", consolePage, consoleMaxPage)
	if err != nil {
		return invalid("%v", err)
	}
	limit = max(limit, 1)
	pageNo, err := console.IntParam(r, "page", 0, maxInDoubt/limit)
	if err != nil {
		return invalid("%v (the report lists the %d oldest)", err, maxInDoubt)
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	rep, err := s.inDoubt(ctx)
	if err != nil {
		return err
	}
	from := min(pageNo*limit, len(rep.Txns))
	to := min(from+limit, len(rep.Txns))
	console.WriteJSON(w, http.StatusOK, InDoubtPage{
		Total: rep.Total, Listed: len(rep.Txns), Page: pageNo, Pages: (len(rep.Txns) + limit - 1) / limit, Limit: limit,
		Txns: rep.Txns[from:to], Waiting: rep.Waiting,
	})
	return nil
}

// ParticipantHealth is one participant as the console shows it: the
// coordinator's connections to it (admin status) and the commits it owes
// an acknowledgement for (admin in-doubt; -1 when this replica does not
// lead, so it cannot count them).
type ParticipantHealth struct {
	Name string `json:"name"`
	link.PeerStatus
	// Health is "connected" while at least one connection is up, else
	// "disconnected".
	Health  string `json:"health"`
	Waiting int    `json:"waiting"`
}

func (s *Server) apiParticipants(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	waiting := map[string]int(nil)
	rep, err := s.inDoubt(ctx)
	var ae *errAdmin
	switch {
	case err == nil:
		waiting = rep.Waiting
	case errors.As(err, &ae) && ae.code == wire.CodeNotLeader:
	default:
		return err
	}
	ps := s.set()
	list := make([]ParticipantHealth, 0, len(ps.peers))
	for name, p := range ps.peers {
		h := ParticipantHealth{Name: name, PeerStatus: link.StatusOf(p.mux, p.addr), Health: "disconnected", Waiting: -1}
		if h.Connected > 0 {
			h.Health = "connected"
		}
		if waiting != nil {
			h.Waiting = waiting[name]
		}
		list = append(list, h)
	}
	slices.SortFunc(list, func(a, b ParticipantHealth) int { return cmp.Compare(a.Name, b.Name) })
	console.WriteJSON(w, http.StatusOK, list)
	return nil
}

// Group is /api/group: whether this coordinator is a replica of a group
// and, if so, its role and the members as admin replicas lists them
// (from the leader, each member's match index and whether it is up).
type Group struct {
	Replicated bool     `json:"replicated"`
	Role       string   `json:"role,omitempty"`
	Leader     string   `json:"leader,omitempty"`
	Members    *Members `json:"members,omitempty"`
}

func (s *Server) apiGroup(w http.ResponseWriter, _ *http.Request) error {
	if s.rep == nil {
		console.WriteJSON(w, http.StatusOK, Group{})
		return nil
	}
	body, err := s.adminReplicas(wire.AdminReplicas, nil)
	if err != nil {
		return err
	}
	var m Members
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	var st Status
	s.rep.report(&st)
	console.WriteJSON(w, http.StatusOK, Group{Replicated: true, Role: st.Role, Leader: st.Leader, Members: &m})
	return nil
}
