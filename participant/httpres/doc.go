// Package httpres is the HTTP client side of a participant whose data
// lives in a service written in any language: a remote.Service that
// speaks the contract of docs/http-participant.md.
//
//	POST URL/prepare   {"txn": "<uuid>", "work": "<base64>"}
//	                   → 200 {"vote": "yes"} | {"vote": "no", "reason": "..."} | {"vote": "read-only"}
//	POST URL/commit    {"txn": "<uuid>"}  → any 2xx: done
//	POST URL/abort     {"txn": "<uuid>"}  → any 2xx: done
//	GET  URL/prepared  → 200 {"prepared": ["<uuid>", ...]}
//
// Any other status, a body that is not exactly that, or no answer within
// the call's deadline is an error: for a prepare, remote turns it into a
// NO vote (and an abort); for a commit or abort, into a retry. The
// reference service in participant/httpres/refservice implements the
// contract with Go's standard library only.
package httpres
