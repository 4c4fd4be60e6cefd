// Package client is the Go client of a commitd coordinator: one call runs a
// whole transaction in one round trip.
package client
