//go:build unix

package node

import "syscall"

// openFileLimit returns how many file descriptors this process may hold, 0
// if unknown. The Go runtime has already raised the soft limit to the hard
// one at start (Go 1.19 and later), so this is the limit that applies.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 0
	}
	return int(rl.Cur)
}
