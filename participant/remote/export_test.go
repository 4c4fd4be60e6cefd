package remote

// The planted bugs, for the crash test in package remote_test.
const (
	BugScanAbortsHeld  = bugScanAbortsHeld
	BugSnapshotForgets = bugSnapshotForgets
)

// Plant breaks r with bugs; call it before Attach.
func (r *Resource) Plant(bugs plantedBug) { r.planted = bugs }
