// Package bench generates load against a commitd cluster and records
// latency in histograms.
package bench
