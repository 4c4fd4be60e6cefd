package coordinator_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// apiGet fetches path from the console's API at addr, decodes the body
// into v (if not nil) and returns the status and the body.
func apiGet(t *testing.T, addr, path string, v any) (int, []byte) {
	t.Helper()
	res, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return res.StatusCode, body
}

// The console under 10,000 transactions in flight (issue 18's bad input):
// the participants never vote, so every transaction waits in voting; the
// API answers a bounded page at a time, the pages walked one after the
// other (each after the last id of the one before) list every
// transaction exactly once in id order, and no answer holds the table.
func TestConsolePagesTenThousandInFlight(t *testing.T) {
	const (
		n        = 10_000
		pageSize = 200 // the largest page the API serves
	)
	httpAddr := nodetest.FreeAddr(t)
	r := newRig(t, nil, func(c *coordinator.Config) {
		c.HTTP = httpAddr
		c.PrepareTimeout = 10 * time.Minute // nothing ends while the test looks
		// Ids are accepted only while young (Remember bounds their age):
		// under the race detector on a loaded machine some of 10,000
		// begins reached the coordinator too late (CI: 9,977 in flight).
		c.Remember = 10 * time.Minute
	})
	for _, f := range r.parts {
		f.vote.Store(0) // no answer to a prepare
	}
	// Room for all 10,000 on any one connection: calls go round the
	// connections that are up, and under load the first calls were made
	// before the other two had connected (CI: 310 waited for a slot on a
	// full connection, as no vote ever frees one).
	cl, err := client.Dial(r.coord.Addr().String(), client.Options{Conns: 1, MaxInFlight: n})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); cl.Close() })
	for range n {
		wg.Go(func() {
			bs := []client.Branch{{Participant: "p1", Work: []byte("w")}, {Participant: "p2", Work: []byte("w")}}
			_, _ = cl.Run(ctx, newID(), bs) // ends when the test cancels it
		})
	}
	// 10,000 begins under the race detector on a loaded machine can take
	// longer than Eventually's 10 s (CI): the bound is generous, as
	// nothing here measures speed.
	for deadline := time.Now().Add(time.Minute); r.coord.Status().InFlight != n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d transactions in flight after a minute: %+v", r.coord.Status().InFlight, n, r.coord.Status())
		}
	}

	var sum coordinator.Summary
	if code, body := apiGet(t, httpAddr, "/api/summary", &sum); code != http.StatusOK || sum.Status.InFlight != n || len(body) > 64<<10 {
		t.Fatalf("summary: %d, in flight %d, %d bytes", code, sum.Status.InFlight, len(body))
	}
	var page coordinator.InFlightPage
	if code, _ := apiGet(t, httpAddr, "/api/inflight", &page); code != http.StatusOK || page.Total != n || len(page.Txns) != 50 || page.Limit != 50 || page.Next == "" {
		t.Fatalf("the default page: %d, total %d, %d listed, limit %d, next %q", code, page.Total, len(page.Txns), page.Limit, page.Next)
	}
	seen := make(map[protocol.TxnID]bool, n)
	var last protocol.TxnID
	after, pages := "", 0
	start := time.Now()
	for {
		page = coordinator.InFlightPage{}
		code, body := apiGet(t, httpAddr, "/api/inflight?limit=200&after="+after, &page)
		pages++
		if code != http.StatusOK || page.Total != n || len(page.Txns) > pageSize || len(body) > 256<<10 {
			t.Fatalf("page %d: %d, total %d, %d listed, %d bytes", pages, code, page.Total, len(page.Txns), len(body))
		}
		for _, st := range page.Txns {
			if seen[st.Txn] {
				t.Fatalf("page %d lists %v again", pages, st.Txn)
			}
			if bytes.Compare(st.Txn[:], last[:]) <= 0 {
				t.Fatalf("page %d: %v after %v, not in id order", pages, st.Txn, last)
			}
			if st.State != protocol.TxnInFlight || len(st.Participants) != 2 || st.Participants[1].State != "vote awaited" {
				t.Fatalf("page %d: %+v", pages, st)
			}
			seen[st.Txn], last = true, st.Txn
		}
		if page.Next == "" {
			break
		}
		if page.Next != last.String() {
			t.Fatalf("page %d: next %q, want its last id %v", pages, page.Next, last)
		}
		after = page.Next
		if pages > n/pageSize+1 {
			t.Fatalf("%d pages of %d for %d transactions", pages, pageSize, n)
		}
	}
	t.Logf("%d pages of %d walked in %v", pages, pageSize, time.Since(start).Round(time.Millisecond))
	if len(seen) != n || pages != n/pageSize {
		t.Fatalf("the pages listed %d of %d in %d pages, want %d pages", len(seen), n, pages, n/pageSize)
	}
	// One of them, by id: in flight, waiting for both votes.
	var st protocol.TxnStatus
	if code, _ := apiGet(t, httpAddr, "/api/txn/"+last.String(), &st); code != http.StatusOK || st.State != protocol.TxnInFlight {
		t.Fatalf("txn %v: %d %+v", last, code, st)
	}
	var doubt coordinator.InDoubtPage
	if code, _ := apiGet(t, httpAddr, "/api/in-doubt", &doubt); code != http.StatusOK || doubt.Total != 0 || len(doubt.Txns) != 0 {
		t.Fatalf("in doubt, with nothing decided: %d %+v", code, doubt)
	}
	// Pages past the end are empty; a page larger than 200 is refused.
	if code, _ := apiGet(t, httpAddr, "/api/inflight?after="+last.String(), &page); code != http.StatusOK || len(page.Txns) != 0 || page.Next != "" || page.Total != n {
		t.Fatalf("after the last: %d %+v", code, page)
	}
	var e struct{ Error string }
	if code, _ := apiGet(t, httpAddr, "/api/inflight?limit=10000", &e); code != http.StatusBadRequest || !strings.Contains(e.Error, "from 0 to 200") {
		t.Fatalf("a page of 10,000: %d %q", code, e.Error)
	}
}

// The API's bad input: each answer is a JSON error with the status that
// says what it is, and a lookup that finds nothing still says why.
func TestConsoleAPIErrors(t *testing.T) {
	httpAddr := nodetest.FreeAddr(t)
	r := newRig(t, nil, func(c *coordinator.Config) { c.HTTP = httpAddr })
	committed := newID()
	if res := r.run(committed, "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("%v", res)
	}
	old := newID()
	binary.BigEndian.PutUint64(old[:8], uint64(time.Now().Add(-time.Hour).UnixMilli())<<16|0x7000)
	type answer struct {
		Error string            `json:"error"`
		State protocol.TxnState `json:"state"`
		Txn   protocol.TxnID    `json:"txn"`
	}
	for _, c := range []struct {
		path  string
		code  int
		error string
		state protocol.TxnState
	}{
		{"/api/txn/" + committed.String(), http.StatusOK, "", protocol.TxnCommitted},
		{"/api/txn/not-a-uuid", http.StatusBadRequest, `malformed transaction id "not-a-uuid"`, ""},
		{"/api/txn/" + uuid.NewString(), http.StatusBadRequest, "version 4 UUID", ""},
		{"/api/txn/" + newID().String(), http.StatusNotFound, "unknown transaction id", protocol.TxnNotFound},
		{"/api/txn/" + old.String(), http.StatusGone, "expired transaction id", protocol.TxnExpired},
		{"/api/inflight?after=xyz", http.StatusBadRequest, "after: malformed transaction id", ""},
		{"/api/inflight?limit=-1", http.StatusBadRequest, "limit=\"-1\"", ""},
		{"/api/in-doubt?page=99", http.StatusBadRequest, "page=\"99\"", ""},
		{"/api/nothing", http.StatusNotFound, "no such API", ""},
		{"/api/txn/", http.StatusNotFound, "no such API", ""},
	} {
		var a answer
		code, body := apiGet(t, httpAddr, c.path, &a)
		if code != c.code || !strings.Contains(a.Error, c.error) || a.State != c.state || (c.error == "") != (a.Error == "") {
			t.Errorf("GET %s: %d %s; want %d, error %q, state %q", c.path, code, body, c.code, c.error, c.state)
		}
		if strings.Contains(a.Error, "\n") {
			t.Errorf("GET %s: the error is more than one line: %q", c.path, a.Error)
		}
	}
	var parts []coordinator.ParticipantHealth
	if code, _ := apiGet(t, httpAddr, "/api/participants", &parts); code != http.StatusOK || len(parts) != 2 ||
		parts[0].Name != "p1" || parts[0].Health != "connected" || parts[0].Waiting != 0 || parts[1].Name != "p2" {
		t.Fatalf("participants: %d %+v", code, parts)
	}
	var g coordinator.Group
	if code, _ := apiGet(t, httpAddr, "/api/group", &g); code != http.StatusOK || g.Replicated || g.Members != nil {
		t.Fatalf("group of a lone coordinator: %d %+v", code, g)
	}
	// The page and its assets, from the binary.
	for _, path := range []string{"/", "/console/console.js", "/console/console.css"} {
		res, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || len(body) < 1000 || !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Fatalf("GET %s: %d, %d bytes, CSP %q", path, res.StatusCode, len(body), res.Header.Get("Content-Security-Policy"))
		}
		// The one URL in them is SVG's namespace, which names no fetch.
		body = bytes.ReplaceAll(body, []byte("http://www.w3.org/2000/svg"), nil)
		if bytes.Contains(body, []byte("https://")) || bytes.Contains(body, []byte("http://")) || bytes.Contains(body, []byte("@import")) {
			t.Fatalf("GET %s: names another site", path)
		}
	}
}

// The console of a replicated coordinator: every replica's /api/group
// shows the members and who leads; the leader serves the lists, and a
// follower refuses them with 421 and the leader's address, while its
// summary still answers (with its role).
func TestConsoleOfAGroup(t *testing.T) {
	https := map[uint64]string{1: nodetest.FreeAddr(t), 2: nodetest.FreeAddr(t), 3: nodetest.FreeAddr(t)}
	g := newGroup(t, func(c *coordinator.Config) { c.HTTP = https[c.ID] })
	leader := g.leader(10 * time.Second)
	follower := leader%3 + 1
	nodetest.Eventually(t, "the leader sees every member up", func() bool {
		var gr coordinator.Group
		code, _ := apiGet(t, https[leader], "/api/group", &gr)
		if code != http.StatusOK || !gr.Replicated || gr.Role != "leader" || gr.Members == nil ||
			gr.Members.Leader != leader || len(gr.Members.Replicas) != 3 {
			return false
		}
		for _, r := range gr.Members.Replicas {
			if r.Addr != g.addrs[r.ID] || r.Up == nil || !*r.Up {
				return false
			}
		}
		return true
	})
	nodetest.Eventually(t, "a follower knows the leader", func() bool {
		var gr coordinator.Group
		code, _ := apiGet(t, https[follower], "/api/group", &gr)
		return code == http.StatusOK && gr.Role == "follower" && gr.Leader == g.addrs[leader] &&
			gr.Members != nil && gr.Members.Leader == leader
	})
	if res := g.transfer(leader, 1); res.Outcome != client.Committed {
		t.Fatalf("%v", res)
	}
	var page coordinator.InFlightPage
	if code, body := apiGet(t, https[leader], "/api/inflight", &page); code != http.StatusOK {
		t.Fatalf("the leader's in-flight list: %d %s", code, body)
	}
	var e struct{ Error, Leader string }
	for _, path := range []string{"/api/inflight", "/api/in-doubt"} {
		if code, _ := apiGet(t, https[follower], path, &e); code != http.StatusMisdirectedRequest || e.Leader != g.addrs[leader] || !strings.Contains(e.Error, "does not lead") {
			t.Fatalf("a follower's %s: %d %+v", path, code, e)
		}
	}
	var sum coordinator.Summary
	if code, _ := apiGet(t, https[follower], "/api/summary", &sum); code != http.StatusOK || sum.Status.Role != "follower" || sum.Status.Leader != g.addrs[leader] {
		t.Fatalf("a follower's summary: %d %+v", code, sum.Status)
	}
	var parts []coordinator.ParticipantHealth
	if code, _ := apiGet(t, https[follower], "/api/participants", &parts); code != http.StatusOK || len(parts) != 2 || parts[0].Waiting != -1 {
		t.Fatalf("a follower's participants (it cannot count what they owe): %d %+v", code, parts)
	}
}
