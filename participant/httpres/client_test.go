package httpres

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/participant/httpres/refservice"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

func client(t *testing.T, h http.Handler) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL+"/svc/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestNewRefusesBadURLs(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://x/", "http://", "http://x/?a=1", "://"} {
		if _, err := New(u, nil); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

// The requests are exactly the contract's: method, path under the URL's
// own path, JSON body with the txn as a UUID string and the work in base64.
func TestRequestsAreTheContract(t *testing.T) {
	txn := uuid.New()
	var seen []string
	c := client(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.Path+" "+string(body))
		switch r.URL.Path {
		case "/svc/prepare":
			io.WriteString(w, `{"vote":"yes"}`)
		case "/svc/prepared":
			io.WriteString(w, `{"prepared":["`+txn.String()+`"]}`)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	ctx := context.Background()
	if v, err := c.Prepare(ctx, txn, []byte{0, 1, 2}); v != protocol.VoteYes || err != nil {
		t.Fatalf("Prepare = %v, %v", v, err)
	}
	if err := c.Commit(ctx, txn); err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(ctx, txn); err != nil {
		t.Fatal(err)
	}
	ids, err := c.Prepared(ctx)
	if err != nil || len(ids) != 1 || ids[0] != txn {
		t.Fatalf("Prepared = %v, %v", ids, err)
	}
	want := []string{
		`POST /svc/prepare {"txn":"` + txn.String() + `","work":"AAEC"}`,
		`POST /svc/commit {"txn":"` + txn.String() + `"}`,
		`POST /svc/abort {"txn":"` + txn.String() + `"}`,
		`GET /svc/prepared `,
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// Every answer outside the contract is an error (remote turns a prepare's
// error into a NO vote and a decision's into a retry).
func TestBadServices(t *testing.T) {
	txn := uuid.New()
	done := make(chan struct{})
	defer close(done)
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"500", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) }},
		{"201 for a prepare", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(201); io.WriteString(w, `{"vote":"yes"}`) }},
		{"garbage", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"vote":"yes"`) }},
		{"not an object", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `"yes"`) }},
		{"trailing bytes", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"vote":"yes"} x`) }},
		{"unknown vote", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"vote":"maybe"}`) }},
		{"empty", func(w http.ResponseWriter, _ *http.Request) {}},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/elsewhere", http.StatusFound) }},
		{"huge", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"vote":"yes","reason":"`+strings.Repeat("x", maxVoteBody)+`"}`)
		}},
		{"closes mid-response", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, `{"vote":`)
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-done:
			}
			io.WriteString(w, `{"vote":"yes"}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := client(t, tc.h)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if v, err := c.Prepare(ctx, txn, nil); err == nil {
				t.Fatalf("Prepare = %v, nil: want an error", v)
			}
			if ids, err := c.Prepared(ctx); err == nil {
				t.Fatalf("Prepared = %v, nil: want an error", ids)
			}
		})
	}
	t.Run("decision not 2xx", func(t *testing.T) {
		for _, code := range []int{301, 404, 409, 500, 503} {
			c := client(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
			if err := c.Commit(context.Background(), txn); !errors.Is(err, ErrContract) {
				t.Errorf("status %d: Commit = %v, want ErrContract", code, err)
			}
		}
	})
	t.Run("prepared lists garbage", func(t *testing.T) {
		for _, body := range []string{`{}`, `{"prepared":null}`, `{"prepared":["nope"]}`, `{"prepared":["{` + txn.String() + `}"]}`} {
			c := client(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
			if ids, err := c.Prepared(context.Background()); err == nil {
				t.Errorf("%s: Prepared = %v, want an error", body, ids)
			}
		}
	})
}

// The reference service keeps the contract, including every duplicate.
func TestReferenceServiceContract(t *testing.T) {
	store, err := refservice.Open(t.TempDir()+"/journal", map[string]int64{"alice": 10})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c := client(t, http.StripPrefix("/svc", refservice.Handler(store)))
	ctx := context.Background()
	debit := func(n int) []byte { b, _ := json.Marshal(map[string]any{"account": "alice", "delta": -n}); return b }
	a, b, never := uuid.New(), uuid.New(), uuid.New()
	for range 2 { // every call twice: the same answer
		if v, err := c.Prepare(ctx, a, debit(7)); v != protocol.VoteYes || err != nil {
			t.Fatalf("Prepare a = %v, %v", v, err)
		}
	}
	// 7 of 10 are held: 4 more is too much.
	if v, err := c.Prepare(ctx, b, debit(4)); v != protocol.VoteNo || err != nil {
		t.Fatalf("Prepare b = %v, %v; want no", v, err)
	}
	if ids, err := c.Prepared(ctx); err != nil || len(ids) != 1 || ids[0] != a {
		t.Fatalf("Prepared = %v, %v", ids, err)
	}
	for range 2 {
		if err := c.Commit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// An abort of a transaction it never saw is fine, and refuses a late
	// prepare of it.
	for range 2 {
		if err := c.Abort(ctx, never); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := c.Prepare(ctx, never, debit(1)); v != protocol.VoteNo || err != nil {
		t.Fatalf("prepare after abort = %v, %v; want no", v, err)
	}
	// Conflicts are not 2xx: the participant would retry, and an
	// operator would see it.
	if err := c.Abort(ctx, a); !errors.Is(err, ErrContract) {
		t.Fatalf("abort of a committed transaction = %v", err)
	}
	if err := c.Commit(ctx, never); !errors.Is(err, ErrContract) {
		t.Fatalf("commit of an aborted transaction = %v", err)
	}
	st, _ := store.Snapshot()
	if st.Balances["alice"] != 3 || len(st.Prepared) != 0 || len(st.Committed) != 1 {
		t.Fatalf("state %+v", st)
	}
}
