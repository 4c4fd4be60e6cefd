package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcessCPUSeconds is a process's user+system CPU time so far, from
// /proc/PID/stat (0 if it cannot be read: the process is gone, or this is
// not Linux). The benchmark drivers (bench/matrix, bench/scale) read it
// around a measured run to give each server's CPU per transaction.
func ProcessCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// The fields after the command name, which is in parentheses and may
	// hold spaces.
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}
