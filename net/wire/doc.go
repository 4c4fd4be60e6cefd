// Package wire is commitd's binary frame format.
package wire
