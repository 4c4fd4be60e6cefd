#!/bin/bash
# fuzz-one.sh PKG TARGET FUZZTIME MINIMIZETIME: one short fuzz run of one target (make fuzz).
#
# Go 1.26's fuzz coordinator has a shutdown race at the -fuzztime boundary (go.dev/issue/75804,
# fixed in Go 1.27): a worker's cancellation can escape as the target's failure, "--- FAIL:
# FuzzX" with nothing under it but "context deadline exceeded", and no failing input written.
# It failed a CI run of this repository once (FuzzParseMembers, 2026-12-06). Such a run is
# repeated once; if it races again, or fails in any other way — a failing input written, a
# panic, a t.Error line — this fails, so a real finding is never let through.
set -u
pkg=$1 target=$2 fuzztime=$3 minimize=$4
go=${GO:-go}
for attempt in 1 2; do
	out=$("$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	if [ "$rc" -eq 0 ]; then
		exit 0
	fi
	# What the failing test printed: the indented lines after its "--- FAIL:" line.
	said=$(printf '%s\n' "$out" | awk '/^--- FAIL: /{on=1; next} on && /^[ \t]/{sub(/^[ \t]+/, ""); print; next} on{on=0}')
	if [ "$said" != "context deadline exceeded" ] || printf '%s\n' "$out" | grep -q 'Failing input written'; then
		exit "$rc"
	fi
	echo "fuzz-one: $target: Go's fuzz shutdown race at the -fuzztime boundary (go.dev/issue/75804), nothing found; attempt $attempt of 2"
done
exit 1
