package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

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

// IdentityDialer is Dialer that, with TLS, also requires the certificate
// the far side presents to be valid for one of allowed (as Identity
// judges it): a connection to anyone else is closed before it carries a
// byte of the protocol. Without TLS or with allowed empty it is Dialer.
func IdentityDialer(cfg *tls.Config, allowed []string) func(ctx context.Context, addr string) (net.Conn, error) {
	dial := Dialer(cfg)
	if cfg == nil || len(allowed) == 0 {
		return dial
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		nc, err := dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		// tls.Dialer has completed the handshake.
		if tc, ok := nc.(*tls.Conn); ok {
			if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
				err = CertIdentity(certs[0], allowed)
			} else {
				err = fmt.Errorf("no certificate; want one for %s", strings.Join(allowed, " or "))
			}
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("%s: %w", addr, err)
			}
		}
		return nc, nil
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

// Identity checks who the peer of an accepted connection is, by its TLS
// certificate: the certificate (already verified against the CA by the
// handshake) must be valid for one of allowed — a DNS name or IP address
// in its subject alternative names (as crypto/x509's VerifyHostname
// matches them) or its subject's common name. A connection without TLS
// carries no identity and passes: without TLS the network must be trusted
// (README, "Security"). So does any certificate when allowed is empty.
// The error says what was presented and what was wanted, for a refusal.
func Identity(c *mux.Conn, allowed []string) error {
	st, ok := c.TLS()
	if !ok || len(allowed) == 0 {
		return nil
	}
	if len(st.PeerCertificates) == 0 {
		return fmt.Errorf("no client certificate; want one for %s", strings.Join(allowed, " or "))
	}
	return CertIdentity(st.PeerCertificates[0], allowed)
}

// CertIdentity checks that cert is valid for one of allowed, as Identity
// does (any certificate passes when allowed is empty); for the side that
// dials, which checks the certificate the far side presented.
func CertIdentity(cert *x509.Certificate, allowed []string) error {
	if len(allowed) == 0 {
		return nil
	}
	for _, id := range allowed {
		if id != "" && (cert.Subject.CommonName == id || cert.VerifyHostname(id) == nil) {
			return nil
		}
	}
	names := append([]string{cert.Subject.CommonName}, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	return fmt.Errorf("certificate for %s; want one for %s", strings.Join(names, ", "), strings.Join(allowed, " or "))
}

// Host returns the host part of a host:port address (the whole of addr if
// it has no port): the identity a certificate must carry to be dialed at
// addr, and so by default to dial in as the node at addr.
func Host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// PeerStatus is what `commitd admin status` shows of the connections a
// server dials out (the coordinator to each participant, a participant to
// the coordinator): how many are up and, if one failed or was refused,
// why. A peer that refuses our hello (a name it does not answer to, a
// certificate it does not accept) says so in LastError.
type PeerStatus struct {
	Addr        string    `json:"addr"`
	Connected   int       `json:"connected"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// StatusOf reads p's PeerStatus; addr is where p dials.
func StatusOf(p *mux.Peer, addr string) PeerStatus {
	st := p.Stats()
	return PeerStatus{Addr: addr, Connected: st.Connected, LastError: st.LastError, LastErrorAt: st.LastErrorAt}
}
