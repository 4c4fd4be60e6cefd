package httpres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
)

// Bounds on what a service may answer: a vote is a few bytes, and a list of
// prepared transactions is 39 bytes an id.
const (
	maxVoteBody     = 64 << 10
	maxPreparedBody = 64 << 20
)

// Client calls one service. It is safe for concurrent use.
type Client struct {
	base   string // the URL without a trailing slash
	http   *http.Client
	logger *slog.Logger
}

// New returns a Client for the service at rawURL (http or https, with an
// optional path prefix; the endpoints are appended to it). A nil logger
// is slog.Default().
func New(rawURL string, logger *slog.Logger) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--url %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--url %q: want http://HOST[:PORT][/PATH] or https://…, without a query", rawURL)
	}
	if logger == nil {
		logger = slog.Default()
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Every caller of the participant may have a prepare out at once: keep
	// their connections for the next one instead of closing all but two.
	tr.MaxIdleConnsPerHost = 1024
	tr.MaxIdleConns = 1024
	tr.IdleConnTimeout = 90 * time.Second
	return &Client{
		base:   strings.TrimRight(u.String(), "/"),
		http:   &http.Client{Transport: tr, CheckRedirect: noRedirects},
		logger: logger,
	}, nil
}

// noRedirects: a redirect is not an answer of the contract (and following
// one would resend a prepare's work somewhere else).
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close closes the idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

type prepareRequest struct {
	Txn  string `json:"txn"`
	Work []byte `json:"work"` // encoding/json: standard base64
}

type txnRequest struct {
	Txn string `json:"txn"`
}

type voteReply struct {
	Vote   string `json:"vote"`
	Reason string `json:"reason,omitempty"`
}

// ErrContract wraps every answer that breaks the contract: a status,
// body or vote it does not allow.
var ErrContract = errors.New("the service broke the contract")

// Prepare posts the work and reads the vote.
func (c *Client) Prepare(ctx context.Context, txn protocol.TxnID, work []byte) (protocol.Vote, error) {
	if work == nil {
		work = []byte{} // "" rather than null
	}
	body, err := c.post(ctx, "/prepare", prepareRequest{Txn: txn.String(), Work: work}, true)
	if err != nil {
		return 0, err
	}
	var r voteReply
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("%w: prepare %v: body %q: %v", ErrContract, txn, snippet(body), err)
	}
	switch r.Vote {
	case "yes":
		return protocol.VoteYes, nil
	case "no":
		c.logger.Debug("service voted no", "txn", txn, "reason", r.Reason)
		return protocol.VoteNo, nil
	case "read-only":
		return protocol.VoteReadOnly, nil
	}
	return 0, fmt.Errorf("%w: prepare %v: vote %q (want yes, no or read-only)", ErrContract, txn, r.Vote)
}

// Commit posts the decision; any 2xx is done.
func (c *Client) Commit(ctx context.Context, txn protocol.TxnID) error {
	_, err := c.post(ctx, "/commit", txnRequest{Txn: txn.String()}, false)
	return err
}

// Abort posts the decision; any 2xx is done.
func (c *Client) Abort(ctx context.Context, txn protocol.TxnID) error {
	_, err := c.post(ctx, "/abort", txnRequest{Txn: txn.String()}, false)
	return err
}

// Prepared lists what the service holds prepared.
func (c *Client) Prepared(ctx context.Context) ([]protocol.TxnID, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/prepared", nil)
	if err != nil {
		return nil, err
	}
	body, err := c.do(req, "/prepared", true, maxPreparedBody)
	if err != nil {
		return nil, err
	}
	var r struct {
		Prepared []string `json:"prepared"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Prepared == nil {
		return nil, fmt.Errorf("%w: GET /prepared: body %q: want {\"prepared\": [...]} (%v)", ErrContract, snippet(body), err)
	}
	ids := make([]protocol.TxnID, 0, len(r.Prepared))
	for _, s := range r.Prepared {
		id, err := uuid.Parse(s)
		if err != nil || len(s) != 36 {
			return nil, fmt.Errorf("%w: GET /prepared: %q is not a transaction id", ErrContract, s)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (c *Client) post(ctx context.Context, path string, v any, want200 bool) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	// The participant's span for this call, when it traces: the service
	// may join the trace (docs/tracing.md). Nothing is set otherwise.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	return c.do(req, path, want200, maxVoteBody)
}

// do sends req and reads its body (at most limit bytes): a prepare's vote
// and the list need exactly 200, a decision any 2xx.
func (c *Client) do(req *http.Request, path string, want200 bool, limit int64) ([]byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", req.Method, path, err)
	}
	ok := resp.StatusCode == http.StatusOK || !want200 && resp.StatusCode/100 == 2
	if !ok {
		return nil, fmt.Errorf("%w: %s %s: status %d: %q", ErrContract, req.Method, path, resp.StatusCode, snippet(body))
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: %s %s: answer longer than %d bytes", ErrContract, req.Method, path, limit)
	}
	return body, nil
}

// snippet is the start of a body, for an error message.
func snippet(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
