package console

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
)

//go:embed assets
var assets embed.FS

// security are the headers of every answer: the page loads nothing but
// what this server serves (a CDN or an injected script is refused by the
// browser), and is not framed by another site.
func security(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// Index serves the coordinator's console page (register it for
// "GET /{$}").
func Index() http.Handler { return page("assets/index.html") }

// ParticipantIndex serves a participant's smaller page: its counters, its
// connections to the coordinator and what it holds prepared.
func ParticipantIndex() http.Handler { return page("assets/participant.html") }

func page(name string) http.Handler {
	page, err := assets.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("console: the embedded page is missing: %v", err)) // a build without it is broken
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		security(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page)
	})
}

// Assets serves the page's script and style sheet under /console/
// (register it for "GET /console/").
func Assets() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(fmt.Sprintf("console: %v", err))
	}
	files := http.StripPrefix("/console/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		security(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// Error is the body of every error the API answers: what is wrong, in one
// line, and — from a replica that does not lead — the leader's address
// ("" when it knows none), where the console's data is.
type Error struct {
	Error  string `json:"error"`
	Leader string `json:"leader,omitempty"`
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(Error{Error: "encoding the answer: " + err.Error()})
	}
	h := w.Header()
	security(h)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// WriteError answers an error with status.
func WriteError(w http.ResponseWriter, status int, format string, a ...any) {
	WriteJSON(w, status, Error{Error: fmt.Sprintf(format, a...)})
}

// IntParam reads the query parameter name of r as an integer from 0 to
// most, def when it is absent. The error says what is wrong in words a
// person reading the API's answer understands.
func IntParam(r *http.Request, name string, def, most int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > most {
		return 0, fmt.Errorf("%s=%q: want a whole number from 0 to %d", name, s, most)
	}
	return n, nil
}

// NotFound answers every other path under /api/, naming the paths
// there are.
func NotFound(paths ...string) http.Handler {
	list := strings.Join(paths, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "no such API: %s (the console's API is %s)", r.URL.Path, list)
	})
}
