package participant

import (
	"slices"
	"testing"
)

// With TLS the coordinator's certificate must be valid for the host of its
// address — of any of them for a replicated coordinator, whose leader may
// be any replica — unless CoordinatorIdentity names one.
func TestCoordinatorIdentities(t *testing.T) {
	for _, tc := range []struct {
		coord, id string
		want      []string
	}{
		{"c.test:7400", "", []string{"c.test"}},
		{"10.0.0.1:7400,10.0.0.2:7400,c3.test:7400", "", []string{"10.0.0.1", "10.0.0.2", "c3.test"}},
		{"10.0.0.1:7400,10.0.0.2:7400", "coordinator.test", []string{"coordinator.test"}},
	} {
		c := Config{Coordinator: tc.coord, CoordinatorIdentity: tc.id}
		c.fill()
		if got := c.coordinatorIdentities(); !slices.Equal(got, tc.want) {
			t.Errorf("--coordinator %s --coordinator-identity %q: %v, want %v", tc.coord, tc.id, got, tc.want)
		}
	}
}
