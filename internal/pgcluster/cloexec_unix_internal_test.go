//go:build linux

package pgcluster

import (
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func fdFlags(t *testing.T, fd int) uintptr {
	t.Helper()
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	require.Zero(t, errno)
	return flags
}

// TestCloseInheritedOnExec: a descriptor opened without close-on-exec (as
// a Go fuzz worker inherits its coordinator's pipes) gets the flag, so the
// postmaster pg_ctl leaves running does not keep it open.
func TestCloseInheritedOnExec(t *testing.T) {
	var p [2]int
	require.NoError(t, syscall.Pipe(p[:])) // pipe2(p, 0): no close-on-exec
	defer syscall.Close(p[0])              //nolint:errcheck
	defer syscall.Close(p[1])              //nolint:errcheck
	require.Zero(t, fdFlags(t, p[0])&syscall.FD_CLOEXEC, "precondition: the pipe is inheritable")

	inheritedOnce = sync.Once{}
	closeInheritedOnExec()
	for _, fd := range p {
		require.NotZero(t, fdFlags(t, fd)&syscall.FD_CLOEXEC, "fd %d", fd)
	}
}
