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

// ProcessIOCalls is how many read-type and write-type system calls a
// process has made so far (read, readv, recvmsg… and write, writev,
// sendmsg…, over all its threads), from the syscr and syscw lines of
// /proc/PID/io; ok is false if they cannot be read (the process is gone,
// not this user's, or this is not Linux). bench/matrix divides them by the
// transactions of a cell: the network's system calls per transaction.
func ProcessIOCalls(pid int) (reads, writes uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, false
	}
	var gotR, gotW bool
	for line := range strings.Lines(string(b)) {
		k, v, found := strings.Cut(strings.TrimSpace(line), ":")
		if !found {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "syscr":
			reads, gotR = n, true
		case "syscw":
			writes, gotW = n, true
		}
	}
	return reads, writes, gotR && gotW
}
