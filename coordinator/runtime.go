package coordinator

import (
	rm "runtime/metrics"
	"syscall"
)

// runtimeSample reads the process's allocation, heap and CPU counters for
// the status report: a benchmark reads them before and after a run to
// report allocations and CPU per transaction and to see that memory stays
// flat. runtime/metrics reads them without stopping the world.
func runtimeSample() (mallocs, heapBytes uint64, cpuSeconds float64) {
	s := []rm.Sample{
		{Name: "/gc/heap/allocs:objects"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}
	rm.Read(s)
	if s[0].Value.Kind() == rm.KindUint64 {
		mallocs = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == rm.KindUint64 {
		heapBytes = s[1].Value.Uint64()
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpuSeconds = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	return mallocs, heapBytes, cpuSeconds
}
