//go:build unix

package pgcluster

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// account is the unprivileged user the server binaries run as when this
// process is root.
type account struct {
	name     string
	uid, gid int
}

// serverUser is the system user that runs the server when we are root.
const serverUser = "postgres"

// serverAccount returns nil when the binaries can run as the current user,
// or the "postgres" system user when we are root (initdb and postgres
// refuse to run as root).
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root, which initdb and postgres refuse, and there is no %q "+
			"system user to run them as (%v): create one (useradd --system %s) or run as a non-root user",
			serverUser, err, serverUser)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgcluster: user %s: %w", serverUser, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("pgcluster: user %q has uid 0; PostgreSQL needs an unprivileged user", serverUser)
	}
	return &account{name: serverUser, uid: uid, gid: gid}, nil
}

// sysProcAttr makes a command run as a (nil: as the current user).
func (a *account) sysProcAttr() *syscall.SysProcAttr {
	if a == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid)}}
}

// ensureTraversable gives a the search (x) permission on dir and all its
// ancestors where it lacks it, so the server can reach its data directory.
// Only the search bit of the class a falls in is added (never read or
// write), and each change is logged.
func ensureTraversable(dir string, a *account, log *slog.Logger) error {
	for d := dir; ; {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		var bit fs.FileMode
		switch {
		case int(st.Uid) == a.uid:
			bit = 0o100
		case int(st.Gid) == a.gid:
			bit = 0o010
		default:
			bit = 0o001
		}
		if fi.Mode().Perm()&bit == 0 {
			log.Info("pgcluster: letting the server user traverse a parent of the data dir",
				"dir", d, "user", a.name, "mode", fi.Mode().Perm()|bit)
			if err := os.Chmod(d, fi.Mode()|bit); err != nil {
				return fmt.Errorf("pgcluster: user %s cannot reach the data dir through %s: %w", a.name, d, err)
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

// chownTree gives root and everything below it to a, without following
// symlinks.
func chownTree(root string, a *account) error {
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == a.uid && int(st.Gid) == a.gid {
			return nil
		}
		return os.Lchown(path, a.uid, a.gid)
	})
}

// processIsPostgres reports whether pid is a live process that looks like
// a PostgreSQL server (so a recycled PID of another program after a crash
// is not mistaken for one).
func processIsPostgres(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return true // no /proc (macOS): trust the liveness check
	}
	return strings.HasPrefix(strings.TrimSpace(string(comm)), "postgres")
}

// closeInheritedOnExec marks every open descriptor above stderr
// close-on-exec, once per process, before the first server binary runs.
// Go opens its own descriptors close-on-exec, but one this process
// inherited without the flag stays open in every child, and pg_ctl leaves
// the postmaster running as a daemon: it would hold such a descriptor for
// the cluster's life. A Go fuzz worker is such a process (its pipes to the
// fuzz coordinator are descriptors 3 and 4): a worker killed with its
// private cluster running left the coordinator waiting forever for the
// pipe's end, and `make fuzz` hung (a fresh-clone CI run).
func closeInheritedOnExec() {
	inheritedOnce.Do(func() {
		entries, err := os.ReadDir("/dev/fd")
		if err != nil {
			return
		}
		for _, e := range entries {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				syscall.CloseOnExec(fd)
			}
		}
	})
}

var inheritedOnce sync.Once
