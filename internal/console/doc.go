// Package console is the coordinator's web console as a browser sees it:
// one page, its script and its style sheet, embedded in the binary (with
// the go:embed directive: no CDN, no web fonts, no build step), and the
// small JSON conventions its API shares (a body for every answer, one line
// for every error, bounded paging parameters). The API's data comes from
// the coordinator, which registers the handlers on its --http address
// (coordinator/console.go); this package imports nothing of the module.
package console
