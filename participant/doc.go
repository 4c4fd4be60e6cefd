// Package participant is the participant server: it joins the engine's
// participant machine, a Resource, the write-ahead log and the network.
package participant
