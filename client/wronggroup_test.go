package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/google/uuid"
)

// A WrongGroupError says which group refused, why, and both map versions
// (or that the group reads none), and is ErrWrongGroup.
func TestWrongGroupErrorNamesTheVersions(t *testing.T) {
	id := uuid.Must(uuid.NewV7())
	for _, c := range []struct {
		err  client.WrongGroupError
		want string
	}{
		{client.WrongGroupError{Txn: id, Refusal: cluster.Refusal{Group: 2, Owner: 2, State: cluster.Draining, Version: 4}, MapVersion: 3},
			"group 2 refused " + id.String() + ": the group is draining in its cluster map version 4 (this client's: version 3)"},
		{client.WrongGroupError{Txn: id, Refusal: cluster.Refusal{Group: 2, Owner: 1}, MapVersion: 3, Reload: errors.New("no such file")},
			"group 2 refused " + id.String() + ": it belongs to group 1 (it reads no cluster map) (this client's: version 3); no newer map: no such file"},
	} {
		if got := c.err.Error(); !strings.Contains(got, c.want) || !errors.Is(&c.err, client.ErrWrongGroup) {
			t.Errorf("%q, want it to contain %q and be ErrWrongGroup", got, c.want)
		}
	}
}
