package cluster

import (
	"fmt"
	"strings"

	"github.com/commitd/commitd/protocol"
)

// Refusal is why a coordinator group refused a new transaction because of
// the cluster's map: the id names another group (Owner != Group), or the
// map the group holds drains or retires it (State). Nothing was started.
//
// It travels as the detail of the Begin's rejected Outcome (cause
// invalid): text a person reads, which a client parses back with
// ParseRefusal. So no wire change was needed, and clients of any version
// still read why. Detail and ParseRefusal are the two ends of that text:
// change one, change the other (TestRefusalRoundTrip).
type Refusal struct {
	Group   uint16 // the refusing coordinator's group
	Owner   uint16 // the group stamped in the refused id
	State   State  // the group's state in its map, when Owner == Group
	Version uint64 // the version of the map the group holds; 0 without one
}

// Detail is the refusal's text for the Outcome of the Begin of id.
func (r Refusal) Detail(id protocol.TxnID) string {
	if r.Owner != r.Group {
		version := ""
		if r.Version != 0 {
			version = fmt.Sprintf(" (cluster map version %d)", r.Version)
		}
		return fmt.Sprintf("id %v belongs to group %d, and this coordinator is group %d%s: make ids with the cluster's map (docs/scale.md)",
			id, r.Owner, r.Group, version)
	}
	return fmt.Sprintf("group %d is %s in cluster map version %d: it takes no new transaction; make ids with that map (docs/scale.md)",
		r.Group, r.State, r.Version)
}

// ParseRefusal reads a Refusal back from an Outcome's detail, and says
// false for any other detail.
func ParseRefusal(detail string) (Refusal, bool) {
	var r Refusal
	var id, state string
	if n, _ := fmt.Sscanf(detail, "id %s belongs to group %d, and this coordinator is group %d", &id, &r.Owner, &r.Group); n == 3 {
		if i := strings.Index(detail, " (cluster map version "); i >= 0 {
			if n, _ := fmt.Sscanf(detail[i:], " (cluster map version %d)", &r.Version); n != 1 {
				return Refusal{}, false
			}
		}
		return r, r.Owner != r.Group
	}
	if n, _ := fmt.Sscanf(detail, "group %d is %s in cluster map version %d:", &r.Group, &state, &r.Version); n == 3 {
		switch state {
		case Draining.String():
			r.State = Draining
		case Retired.String():
			r.State = Retired
		default:
			return Refusal{}, false
		}
		r.Owner = r.Group
		return r, true
	}
	return Refusal{}, false
}
