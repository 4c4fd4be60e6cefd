package participant

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/commitd/commitd/internal/console"
	"github.com/commitd/commitd/internal/obs"
	"github.com/commitd/commitd/net/wire"
)

// A participant's smaller web console (docs/console.md), on its --http
// address: what `commitd admin status` and `admin in-doubt --participant`
// show, one page of the prepared transactions at a time.

// consolePage is the in-doubt list's default page, consoleMaxPage the
// largest a request may ask for.
const (
	consolePage    = 50
	consoleMaxPage = 200
)

func (s *Server) consoleRoutes() []obs.Route {
	return []obs.Route{
		{Pattern: "GET /{$}", Handler: console.ParticipantIndex()},
		{Pattern: "GET /console/", Handler: console.Assets()},
		{Pattern: "GET /api/status", Handler: http.HandlerFunc(s.apiStatus)},
		{Pattern: "GET /api/in-doubt", Handler: http.HandlerFunc(s.apiInDoubt)},
		{Pattern: "/api/", Handler: console.NotFound("/api/status", "/api/in-doubt")},
	}
}

// ConsoleStatus is a participant's /api/status: its name and admin status.
type ConsoleStatus struct {
	Name   string          `json:"name"`
	Status json.RawMessage `json:"status"`
}

func (s *Server) apiStatus(w http.ResponseWriter, _ *http.Request) {
	st, err := s.adminJSON(nil, wire.AdminStatus, nil)
	if err != nil {
		console.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	console.WriteJSON(w, http.StatusOK, ConsoleStatus{Name: s.cfg.Name, Status: st})
}

// InDoubtPage is a participant's /api/in-doubt: page ?page= (from 0) of
// its in-doubt report (the oldest 1,000 it holds; Total counts them all),
// ?limit= (default 50, at most 200) a page.
type InDoubtPage struct {
	Name   string         `json:"name"`
	Total  int            `json:"total"`
	Listed int            `json:"listed"`
	Page   int            `json:"page"`
	Pages  int            `json:"pages"`
	Limit  int            `json:"limit"`
	Txns   []InDoubtEntry `json:"txns"`
}

func (s *Server) apiInDoubt(w http.ResponseWriter, r *http.Request) {
	limit, err := console.IntParam(r, "limit", consolePage, consoleMaxPage)
	if err != nil {
		console.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	limit = max(limit, 1)
	pageNo, err := console.IntParam(r, "page", 0, maxInDoubt/limit)
	if err != nil {
		console.WriteError(w, http.StatusBadRequest, "%v (the report lists the %d oldest)", err, maxInDoubt)
		return
	}
	rep, err := s.inDoubt()
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusServiceUnavailable
		}
		console.WriteError(w, status, "%v", err)
		return
	}
	from := min(pageNo*limit, len(rep.Txns))
	to := min(from+limit, len(rep.Txns))
	console.WriteJSON(w, http.StatusOK, InDoubtPage{
		Name: rep.Name, Total: rep.Total, Listed: len(rep.Txns), Page: pageNo,
		Pages: (len(rep.Txns) + limit - 1) / limit, Limit: limit, Txns: rep.Txns[from:to],
	})
}
