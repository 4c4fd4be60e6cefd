package cluster

// Reloaded is a server's answer to `commitd admin cluster reload`: it
// re-read File, the map file it was started with (--cluster), and now
// uses the map of version MapVersion.
type Reloaded struct {
	MapVersion uint64 `json:"map_version"`
	File       string `json:"file"`
}
