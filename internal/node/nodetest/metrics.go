package nodetest

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Metric reads one series from the /metrics endpoint at addr (a server's
// Config.HTTP): series is written as the endpoint writes it, the name and
// its labels, e.g. `commitd_coordinator_transactions_total{outcome="rejected"}`.
// It fails the test if the endpoint does not answer within 10 s or does not
// have the series.
func Metric(t testing.TB, addr, series string) float64 {
	t.Helper()
	url := "http://" + addr + "/metrics"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s %v", url, resp.Status, err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %s: %v", url, series, err)
			}
			return f
		}
	}
	t.Fatalf("%s: no series %s", url, series)
	return 0
}
