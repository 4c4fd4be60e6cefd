package participant_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/protocol"
)

// A participant's console API: its status, and a page of what it holds
// prepared, as admin in-doubt lists it; bad paging parameters and unknown
// paths are JSON errors with their status; the page comes from the binary.
func TestParticipantConsoleAPI(t *testing.T) {
	httpAddr := nodetest.FreeAddr(t)
	r := unstartedRig(t, nil)
	r.cfg.HTTP = httpAddr
	r.start()
	get := func(path string, v any) int {
		t.Helper()
		res, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if v != nil {
			if err := json.Unmarshal(body, v); err != nil {
				t.Fatalf("GET %s: %v in %s", path, err, body)
			}
		}
		return res.StatusCode
	}
	id := newID()
	r.coord.prepare(t, id, 1, -10)
	nodetest.Eventually(t, "a yes vote", func() bool { return r.coord.vote(id) == protocol.VoteYes })

	var st participant.ConsoleStatus
	if code := get("/api/status", &st); code != http.StatusOK || st.Name != "p1" {
		t.Fatalf("status: %d %+v", code, st)
	}
	var counts struct{ Prepared int }
	if err := json.Unmarshal(st.Status, &counts); err != nil || counts.Prepared != 1 {
		t.Fatalf("status: %s, %v", st.Status, err)
	}
	var page participant.InDoubtPage
	if code := get("/api/in-doubt", &page); code != http.StatusOK || page.Total != 1 || len(page.Txns) != 1 ||
		page.Txns[0].Txn != id || page.Txns[0].State != "prepared" || page.Pages != 1 || page.Limit != 50 {
		t.Fatalf("in doubt: %d %+v", code, page)
	}
	if code := get("/api/in-doubt?page=1", &page); code != http.StatusOK || len(page.Txns) != 0 || page.Total != 1 {
		t.Fatalf("the page after the last: %d %+v", code, page)
	}
	var e struct{ Error string }
	for _, c := range []struct {
		path, want string
		code       int
	}{
		{"/api/in-doubt?limit=201", `limit="201"`, http.StatusBadRequest},
		{"/api/in-doubt?page=x", `page="x"`, http.StatusBadRequest},
		{"/api/txn/" + id.String(), "no such API", http.StatusNotFound},
	} {
		e.Error = ""
		if code := get(c.path, &e); code != c.code || !strings.Contains(e.Error, c.want) {
			t.Errorf("GET %s: %d %q, want %d %q", c.path, code, e.Error, c.code, c.want)
		}
	}
	for _, path := range []string{"/", "/console/participant.js", "/console/common.js", "/console/console.css"} {
		res, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || len(body) < 500 {
			t.Errorf("GET %s: %d, %d bytes", path, res.StatusCode, len(body))
		}
	}
}
