package mysql

import (
	"context"
	"time"
)

// CheckVersion is checkVersion, for the tests.
var CheckVersion = checkVersion

// ExpirePrevented drops the preventions older than age at once (Forget
// does it at most once a minute, for those older than PreventRetention).
func (r *Resource) ExpirePrevented(ctx context.Context, age time.Duration) error {
	return r.expirePrevented(ctx, age)
}
