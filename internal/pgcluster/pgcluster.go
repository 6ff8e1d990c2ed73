// Package pgcluster gives riverbank a private PostgreSQL server of its own,
// for `riverbank dev` and for the test harness.
//
// riverbank needs a real PostgreSQL (River's queue tables rely on it), but
// asking every developer and every CI job to provision, configure and clean up
// a shared server is slow and error-prone. This package instead runs a
// dedicated cluster from the local PostgreSQL server binaries (initdb, pg_ctl,
// postgres), either in a throwaway temporary directory or in a persistent
// data directory that is reused across runs, and falls back to a Docker
// container when no binaries are installed. Nothing else is needed: no
// pre-existing server, no passwords, no system service.
//
// Clusters made by this package are for development and tests only: they
// trust every local connection and run with durability switched off.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// ErrNoBinaries is wrapped by the errors of FindBinaries and Start when no
// directory holding the PostgreSQL server binaries (initdb, pg_ctl and
// postgres) can be found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, pg_ctl, postgres) found")

// ErrNoDocker is wrapped by the error of StartDocker when no Docker engine
// can be reached.
var ErrNoDocker = errors.New("no usable Docker engine")

// Kind values reported in Cluster.Kind.
const (
	// KindLocal is the Kind of a cluster run from local PostgreSQL binaries.
	KindLocal = "local"
	// KindDocker is the Kind of a cluster run in a Docker container.
	KindDocker = "docker"
)

// DefaultDatabase is the database created and named in Cluster.URL when
// Options.Database is empty.
const DefaultDatabase = "riverbank"

// Options configures Start, StartDocker and StartAny.
type Options struct {
	// DataDir is where the cluster lives. If the directory is missing or
	// empty, it is created and initialised with initdb; if it already holds
	// a cluster (a PG_VERSION file exists), that cluster is reused. Its parent
	// is created with mode 0755 if missing.
	//
	// If DataDir is "", Start uses a new temporary directory and removes it
	// on Stop (a throwaway cluster). StartDocker ignores DataDir: Docker
	// clusters are always throwaway.
	DataDir string

	// Port is the TCP port on 127.0.0.1 the server listens on. 0 picks a
	// free port.
	Port int

	// Logger receives progress messages. It may be nil.
	Logger *slog.Logger

	// Database is the database created if missing and named in
	// Cluster.URL. "" means DefaultDatabase ("riverbank").
	Database string
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o Options) database() string {
	if o.Database == "" {
		return DefaultDatabase
	}
	return o.Database
}

// Cluster is a running PostgreSQL server started by Start, StartDocker or
// StartAny. Call Stop when done with it.
type Cluster struct {
	// URL is a connection string for Options.Database as superuser
	// "postgres", e.g.
	// postgres://postgres@127.0.0.1:54321/riverbank?sslmode=disable.
	URL string

	// Kind is KindLocal ("local") or KindDocker ("docker").
	Kind string

	// Port is the TCP port the server listens on (for Docker, the port
	// mapped on the host).
	Port int

	// DataDir is the absolute path of the data directory of a local
	// cluster; "" for Docker.
	DataDir string

	// LogFile is the server log of a local cluster; "" for Docker.
	LogFile string

	mu      sync.Mutex
	stopped bool
	down    bool
	stop    func(context.Context) error
	// local is set for a local cluster: StopServer and StartServer need it.
	local *localServer
}

// Stop shuts the server down (pg_ctl stop -m fast, escalating to an
// immediate shutdown if that fails; or terminating the container) and, for
// a throwaway cluster, removes its directory. A persistent DataDir is kept.
// A local server that a later Start has since replaced on the same DataDir
// is left running.
// Stop is idempotent: after a successful Stop, further calls return nil.
func (c *Cluster) Stop(ctx context.Context) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.stop == nil {
		return nil
	}
	if err := c.stop(ctx); err != nil {
		return err
	}
	c.stopped = true
	return nil
}

// StopServer shuts the server down (pg_ctl stop -m fast: open sessions are
// terminated, new connections refused) but keeps the cluster: its data
// directory, port and URL stay valid, and StartServer brings it back. It is
// how tests play a database outage. Calling it on a server that is already
// down does nothing.
//
// Only local clusters support it; for a Docker cluster (whose host port may
// change when the container restarts) the error wraps errors.ErrUnsupported.
func (c *Cluster) StopServer(ctx context.Context) error {
	if c.local == nil {
		return fmt.Errorf("pgcluster: StopServer on a %s cluster: %w", c.Kind, errors.ErrUnsupported)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: StopServer after Stop")
	}
	if c.down {
		return nil
	}
	if err := c.local.shutdown(ctx); err != nil {
		return err
	}
	c.down = true
	return nil
}

// StartServer starts the server StopServer shut down, on the same data
// directory and port, and waits until it accepts connections. Calling it
// on a running server does nothing. A Stop after StopServer (with or
// without StartServer) cleans up as usual.
func (c *Cluster) StartServer(ctx context.Context) error {
	if c.local == nil {
		return fmt.Errorf("pgcluster: StartServer on a %s cluster: %w", c.Kind, errors.ErrUnsupported)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: StartServer after Stop")
	}
	if !c.down {
		return nil
	}
	if _, err := c.local.startServer(ctx, c.Port); err != nil {
		return err
	}
	c.down = false
	return nil
}

// StartAny starts a local cluster with Start and, when no PostgreSQL
// binaries are installed, falls back to StartDocker. When neither works,
// the error (which wraps both ErrNoBinaries and ErrNoDocker) says what to
// install. Errors of Start other than ErrNoBinaries are returned as they
// are, without trying Docker, so that a broken local setup is reported
// rather than hidden.
func StartAny(ctx context.Context, opts Options) (*Cluster, error) {
	c, err := Start(ctx, opts)
	if err == nil || !errors.Is(err, ErrNoBinaries) {
		return c, err
	}
	opts.logger().Info("pgcluster: no local PostgreSQL binaries, trying Docker", "err", err)
	c, derr := StartDocker(ctx, opts)
	if derr == nil {
		return c, nil
	}
	if !errors.Is(derr, ErrNoDocker) {
		return nil, fmt.Errorf("%w; and starting PostgreSQL in Docker failed: %w", err, derr)
	}
	return nil, &nothingInstalledError{local: err, docker: derr}
}

// nothingInstalledError is StartAny's error when neither local binaries nor
// Docker are available. Its message is meant for the person at the
// keyboard; Unwrap exposes ErrNoBinaries and ErrNoDocker.
type nothingInstalledError struct {
	local, docker error
}

func (e *nothingInstalledError) Error() string {
	return "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under " +
		"/usr/lib/postgresql/*/bin, and no Docker engine: install PostgreSQL " +
		"(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@16) " +
		"or Docker, or set DATABASE_URL"
}

func (e *nothingInstalledError) Unwrap() []error { return []error{e.local, e.docker} }
