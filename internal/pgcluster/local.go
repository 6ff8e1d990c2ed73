package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// serverBinaries are the programs FindBinaries looks for, all in one
// directory (initdb and pg_ctl locate postgres next to themselves).
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// FindBinaries returns the directory holding the PostgreSQL server binaries
// initdb, pg_ctl and postgres.
//
// It first looks on PATH, resolving symlinks, and takes the first directory
// that has all three programs (on Debian /usr/local/bin/initdb is often a
// link into /usr/lib/postgresql/N/bin; a PATH directory with only some of the
// programs is skipped). Otherwise it takes the newest of
// /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin,
// /opt/homebrew/opt/postgresql*/bin and /usr/local/opt/postgresql*/bin.
// The error wraps ErrNoBinaries when nothing is found.
func FindBinaries() (dir string, err error) {
	var candidates []string
	for _, name := range serverBinaries {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, d := range candidates {
		if hasServerBinaries(d) {
			return d, nil
		}
	}

	var globbed []string
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin",
		"/usr/pgsql-*/bin",
		"/opt/homebrew/opt/postgresql*/bin",
		"/usr/local/opt/postgresql*/bin",
	} {
		m, _ := filepath.Glob(pattern)
		globbed = append(globbed, m...)
	}
	sort.SliceStable(globbed, func(i, j int) bool {
		return versionLess(globbed[j], globbed[i]) // newest first
	})
	globbed = append(globbed, "/usr/local/pgsql/bin")
	for _, d := range globbed {
		if hasServerBinaries(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("pgcluster: %w on PATH or under /usr/lib/postgresql/*/bin, "+
		"/usr/pgsql-*/bin, /usr/local/pgsql/bin or /opt/homebrew/opt/postgresql*/bin", ErrNoBinaries)
}

func hasServerBinaries(dir string) bool {
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

var digitsRE = regexp.MustCompile(`\d+(\.\d+)?`)

// versionLess orders paths such as /usr/lib/postgresql/9.6/bin and
// /usr/lib/postgresql/16/bin by the first version number in them.
func versionLess(a, b string) bool {
	va, _ := strconv.ParseFloat(digitsRE.FindString(a), 64)
	vb, _ := strconv.ParseFloat(digitsRE.FindString(b), 64)
	if va != vb {
		return va < vb
	}
	return a < b
}

// Start runs a PostgreSQL cluster from the local binaries found by
// FindBinaries, initialising Options.DataDir with initdb first if it holds
// no cluster yet, and creates Options.Database if it is missing. The server
// listens on 127.0.0.1 only, with trust authentication for user "postgres".
//
// When the process runs as root (initdb and postgres refuse to), the server
// runs as the "postgres" system user: the data directory is chowned to it
// and any parent directory that user cannot traverse gets its search (x)
// bit added.
//
// If a server is already running on DataDir it is stopped and started
// afresh on the chosen port; a postmaster.pid left by a crashed server is
// removed. The error wraps ErrNoBinaries when no binaries are installed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	log := opts.logger()
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	begin := time.Now()

	l := &localServer{bin: bin, log: log}
	if opts.DataDir == "" {
		root, err := os.MkdirTemp("", "riverbank-pg-")
		if err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		// MkdirTemp makes 0700 directories; the server user must get in.
		if err := os.Chmod(root, 0o755); err != nil {
			_ = os.RemoveAll(root)
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		l.tempRoot = root
		l.dataDir = filepath.Join(root, "data")
	} else {
		l.dataDir, err = filepath.Abs(opts.DataDir)
		if err != nil {
			return nil, fmt.Errorf("pgcluster: data dir: %w", err)
		}
	}
	l.logFile = l.dataDir + ".log"

	c, err := l.start(ctx, opts)
	if err != nil {
		if l.tempRoot != "" {
			_ = os.RemoveAll(l.tempRoot)
		}
		return nil, err
	}
	log.Info("pgcluster: local PostgreSQL ready", "url", c.URL, "data_dir", l.dataDir,
		"bin", bin, "took", time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// localServer is the state behind a local Cluster.
type localServer struct {
	bin      string
	dataDir  string
	logFile  string
	tempRoot string   // non-empty for a throwaway cluster: removed on Stop
	runAs    *account // nil: run the binaries as the current user
	pid      int      // postmaster PID of the server this Cluster started
	log      *slog.Logger
}

func (l *localServer) start(ctx context.Context, opts Options) (*Cluster, error) {
	var err error
	if l.runAs, err = serverAccount(); err != nil {
		return nil, err
	}
	if err := l.prepare(ctx); err != nil {
		return nil, err
	}

	port, err := l.startServer(ctx, opts.Port)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Kind:    KindLocal,
		Port:    port,
		DataDir: l.dataDir,
		LogFile: l.logFile,
		URL:     localURL(port, opts.database()),
		stop:    l.stop,
		local:   l,
	}
	if err := ensureDatabase(ctx, localURL(port, "postgres"), opts.database()); err != nil {
		_ = l.stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// prepare creates or checks the data directory, fixes its ownership and
// permissions, clears a stale postmaster.pid, stops a server still running
// on it, and runs initdb when it holds no cluster.
func (l *localServer) prepare(ctx context.Context) error {
	parent := filepath.Dir(l.dataDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("pgcluster: create parent of data dir: %w", err)
	}
	if l.runAs != nil {
		if err := ensureTraversable(parent, l.runAs, l.log); err != nil {
			return err
		}
	}

	_, err := os.Stat(filepath.Join(l.dataDir, "PG_VERSION"))
	existing := err == nil
	if !existing {
		entries, err := os.ReadDir(l.dataDir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(l.dataDir, 0o700); err != nil {
				return fmt.Errorf("pgcluster: create data dir: %w", err)
			}
		case err != nil:
			return fmt.Errorf("pgcluster: read data dir: %w", err)
		case len(entries) > 0:
			return fmt.Errorf("pgcluster: data dir %s is not empty but holds no PostgreSQL cluster (no PG_VERSION); "+
				"empty it or choose another directory", l.dataDir)
		}
	}

	if l.runAs != nil {
		if err := chownTree(l.dataDir, l.runAs); err != nil {
			return fmt.Errorf("pgcluster: give data dir to user %s: %w", l.runAs.name, err)
		}
	}
	// postgres insists on 0700 (or 0750 for group-readable clusters).
	if fi, err := os.Stat(l.dataDir); err == nil && fi.Mode().Perm()&^0o750 != 0 {
		if err := os.Chmod(l.dataDir, 0o700); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}

	// The log lives next to the data dir, whose parent the server user may
	// not be allowed to write in, so create it here and hand it over.
	f, err := os.OpenFile(l.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("pgcluster: create log file: %w", err)
	}
	_ = f.Close()
	if l.runAs != nil {
		if err := os.Lchown(l.logFile, l.runAs.uid, l.runAs.gid); err != nil {
			return fmt.Errorf("pgcluster: chown log file: %w", err)
		}
	}

	if !existing {
		t := time.Now()
		if _, err := l.run(ctx, "initdb", "-D", l.dataDir, "-U", "postgres", "-A", "trust",
			"--no-sync", "-E", "UTF8", "--no-locale"); err != nil {
			return err
		}
		l.log.Info("pgcluster: initialised new cluster", "data_dir", l.dataDir,
			"took", time.Since(t).Round(time.Millisecond))
		return nil
	}

	pidFile := filepath.Join(l.dataDir, "postmaster.pid")
	pid, ok := readPID(pidFile)
	switch {
	case !ok:
	case processIsPostgres(pid):
		l.log.Warn("pgcluster: a server is already running on the data dir; restarting it",
			"data_dir", l.dataDir, "pid", pid)
		if _, err := l.run(ctx, "pg_ctl", "stop", "-D", l.dataDir, "-m", "fast", "-w", "-t", "60"); err != nil {
			return fmt.Errorf("pgcluster: stop the server already running on %s: %w", l.dataDir, err)
		}
	default:
		l.log.Info("pgcluster: removing stale postmaster.pid", "pid", pid)
		if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pgcluster: remove stale postmaster.pid: %w", err)
		}
	}
	return nil
}

// startServer runs pg_ctl start and returns the port the server listens
// on. With port 0 it picks a free port, retrying with another if someone
// else grabs it between the probe and the server's bind.
func (l *localServer) startServer(ctx context.Context, port int) (int, error) {
	for attempt := 1; ; attempt++ {
		p := port
		if p == 0 {
			var err error
			if p, err = freePort(); err != nil {
				return 0, fmt.Errorf("pgcluster: pick a free port: %w", err)
			}
		}
		var logStart int64
		if fi, err := os.Stat(l.logFile); err == nil {
			logStart = fi.Size()
		}

		// fsync, synchronous_commit and full_page_writes are off: these
		// clusters hold dev/test data only, and a crash may lose or corrupt
		// it. Never point this package at data you care about.
		serverOpts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "+
			"-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", p)
		_, err := l.run(ctx, "pg_ctl", "start", "-D", l.dataDir, "-w", "-t", "60",
			"-l", l.logFile, "-o", serverOpts)
		if err == nil {
			l.pid, _ = readPID(filepath.Join(l.dataDir, "postmaster.pid"))
			return p, nil
		}

		// pg_ctl may have given up (timeout, cancelled ctx) while the
		// postmaster lives on: make sure nothing is left running.
		l.kill()
		tail := readFrom(l.logFile, logStart, 4096)
		if port == 0 && attempt < 3 && strings.Contains(tail, "Address already in use") {
			l.log.Info("pgcluster: port taken, retrying with another", "port", p)
			continue
		}
		if tail != "" {
			return 0, fmt.Errorf("%w\nserver log %s:\n%s", err, l.logFile, tail)
		}
		return 0, err
	}
}

// stop is Cluster.stop for a local cluster. It leaves alone a server that
// another Start has since put on the same data dir.
func (l *localServer) stop(ctx context.Context) error {
	if pid, ok := readPID(filepath.Join(l.dataDir, "postmaster.pid")); ok && l.pid != 0 && pid != l.pid {
		l.log.Info("pgcluster: data dir now belongs to another server; not stopping it",
			"data_dir", l.dataDir, "pid", pid)
		return l.removeTemp()
	}
	_, err := l.run(ctx, "pg_ctl", "stop", "-D", l.dataDir, "-m", "fast", "-w", "-t", "60")
	if err != nil && l.running() {
		l.log.Warn("pgcluster: fast shutdown failed, trying immediate", "err", err)
		if _, err2 := l.run(context.WithoutCancel(ctx), "pg_ctl", "stop", "-D", l.dataDir,
			"-m", "immediate", "-w", "-t", "30"); err2 != nil && l.running() {
			return fmt.Errorf("pgcluster: stop server on %s: %w", l.dataDir, errors.Join(err, err2))
		}
	}
	l.log.Info("pgcluster: local PostgreSQL stopped", "data_dir", l.dataDir)
	return l.removeTemp()
}

// shutdown stops the server with a fast shutdown and keeps everything else
// (Cluster.StopServer).
func (l *localServer) shutdown(ctx context.Context) error {
	if _, err := l.run(ctx, "pg_ctl", "stop", "-D", l.dataDir, "-m", "fast", "-w", "-t", "60"); err != nil && l.running() {
		return fmt.Errorf("pgcluster: stop server on %s: %w", l.dataDir, err)
	}
	l.log.Info("pgcluster: local PostgreSQL shut down (data dir and port kept)", "data_dir", l.dataDir)
	return nil
}

// removeTemp deletes the directory of a throwaway cluster.
func (l *localServer) removeTemp() error {
	if l.tempRoot == "" {
		return nil
	}
	if err := os.RemoveAll(l.tempRoot); err != nil {
		return fmt.Errorf("pgcluster: remove throwaway cluster: %w", err)
	}
	return nil
}

// kill stops the server, if any, without waiting for clients.
func (l *localServer) kill() {
	if l.running() {
		_, _ = l.run(context.Background(), "pg_ctl", "stop", "-D", l.dataDir, "-m", "immediate", "-w", "-t", "30")
	}
}

// running reports whether a postmaster is alive for the data dir.
func (l *localServer) running() bool {
	pid, ok := readPID(filepath.Join(l.dataDir, "postmaster.pid"))
	return ok && processIsPostgres(pid)
}

// run runs one of the server binaries (as the server user when root) and
// returns its combined output, which is included in the error.
func (l *localServer) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(l.bin, name), args...)
	// The current directory may be one the server user cannot enter (e.g.
	// /root), which initdb and pg_ctl complain about.
	cmd.Dir = filepath.Dir(l.dataDir)
	cmd.Env = serverEnv()
	cmd.SysProcAttr = l.runAs.sysProcAttr()
	// pg_ctl start leaves a daemon behind; its output goes to the log file,
	// but never wait long for stray holders of our pipes.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	closeInheritedOnExec()
	l.log.Debug("pgcluster: run", "cmd", cmd.String())
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("pgcluster: %s %s: %w: %s", name, args[0], err,
			strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// serverEnv is the environment for the server binaries: ours without PG*
// variables, which could redirect them (PGDATA, PGPORT, ...).
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// readPID returns the postmaster PID from the first line of postmaster.pid.
func readPID(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// readFrom returns up to the last max bytes of path from offset on.
func readFrom(path string, offset int64, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	if fi.Size()-offset > max {
		offset = fi.Size() - max
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func localURL(port int, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// ensureDatabase connects to adminURL and creates database unless it
// exists.
func ensureDatabase(ctx context.Context, adminURL, database string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	var conn *pgx.Conn
	var err error
	for {
		conn, err = pgx.Connect(ctx, adminURL)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: connect to new server: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
		database).Scan(&exists); err != nil {
		return fmt.Errorf("pgcluster: look up database %q: %w", database, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{database}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created concurrently
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgcluster: create database %q: %w", database, err)
	}
	return nil
}
