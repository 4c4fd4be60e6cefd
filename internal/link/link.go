// Package link holds what both servers need at their network edge: dialing
// (with or without TLS) and answering admin requests with JSON that may
// span several frames.
package link

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// Dialer returns a dial function for mux.PeerOptions.Dial: plain TCP, or
// TLS with cfg when cfg is not nil.
func Dialer(cfg *tls.Config) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: mux.DefaultDialTimeout}
		if cfg == nil {
			return d.DialContext(ctx, "tcp", addr)
		}
		td := tls.Dialer{NetDialer: &d, Config: cfg}
		return td.DialContext(ctx, "tcp", addr)
	}
}

// ReplyJSON answers request reqID with body, split over as many
// AdminResponse frames as it needs (all but the last marked More).
func ReplyJSON(c *mux.Conn, reqID uint64, body []byte) error {
	for {
		n := min(len(body), wire.MaxPayload-8)
		r := wire.AdminResponse{More: n < len(body), JSON: body[:n]}
		if err := c.Reply(reqID, &r); err != nil {
			return err
		}
		body = body[n:]
		if len(body) == 0 {
			return nil
		}
	}
}
