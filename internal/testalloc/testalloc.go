// Package testalloc measures allocations in tests without rounding them
// away.
//
// testing.AllocsPerRun divides the allocations it counts by the runs in
// integer arithmetic, so an allocation rarer than once per run reads as 0:
// a check "AllocsPerRun(1000, f) > 0.1" passes with 999 allocations in the
// 1,000 runs. PerRun measures the same way (one warm-up call, GOMAXPROCS 1,
// every allocation in the process counted) and returns the exact average.
package testalloc

import "runtime"

// PerRun returns the average number of heap allocations per call of f over
// runs calls, after one warm-up call, unrounded. Like testing.AllocsPerRun
// it counts the whole process's allocations and must not be called from a
// parallel test.
func PerRun(runs int, f func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.Mallocs
	for range runs {
		f()
	}
	runtime.ReadMemStats(&ms)
	return float64(ms.Mallocs-before) / float64(runs)
}
