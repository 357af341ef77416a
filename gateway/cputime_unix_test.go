//go:build unix

package gateway

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the process has used, user and system, which
// a benchmark divides by its iterations to report CPU per operation
// independently of how busy the machine is.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
