// Package obs serves a server's observability endpoints over HTTP:
// /metrics (Prometheus), /debug/pprof/ and /healthz.
package obs
