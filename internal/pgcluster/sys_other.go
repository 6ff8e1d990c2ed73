//go:build !unix

package pgcluster

import (
	"errors"
	"log/slog"
	"syscall"
)

type account struct {
	name     string
	uid, gid int
}

func serverAccount() (*account, error) { return nil, nil }

func (a *account) sysProcAttr() *syscall.SysProcAttr { return nil }

func ensureTraversable(string, *account, *slog.Logger) error { return nil }

func chownTree(string, *account) error { return errors.ErrUnsupported }

// processIsPostgres cannot tell without platform support; assume a
// postmaster.pid belongs to a live server so that pg_ctl decides.
func processIsPostgres(pid int) bool { return pid > 0 }

func closeInheritedOnExec() {}
