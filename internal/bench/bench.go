// Package bench holds what `riverbank bench` scenarios share: latency
// percentiles, peak RSS, a server in this process (StartServer) or as
// separate `serve` processes (StartServerProcess: several instances on one
// database, each one's RSS and CPU from /proc), a client that spreads
// requests over several servers, and a pgbench run on the same machine,
// because these machines are shared and noisy and throughput is only
// meaningful as a ratio to pgbench measured alongside.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"riverbank/internal/config"
	"riverbank/internal/server"
)

// Latencies collects durations from many goroutines.
type Latencies struct {
	mu     sync.Mutex
	values []time.Duration
	sorted bool
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.values = append(l.values, d)
	l.sorted = false
	l.mu.Unlock()
}

// Count is how many durations were recorded.
func (l *Latencies) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.values)
}

// Percentile returns the p-th percentile (0 < p <= 100), nearest rank.
func (l *Latencies) Percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.values) == 0 {
		return 0
	}
	if !l.sorted {
		slices.Sort(l.values)
		l.sorted = true
	}
	idx := int(float64(len(l.values))*p/100+0.5) - 1
	idx = max(0, min(idx, len(l.values)-1))
	return l.values[idx]
}

// PeakRSS is this process's peak resident set size in bytes.
func PeakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // Linux reports KiB
}

// MiB formats bytes as MiB.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Machine describes where a benchmark ran.
func Machine() string {
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}

// Server is riverbank running in this process.
type Server struct {
	BaseURL string
	Token   string
	stop    context.CancelFunc
	done    chan error

	stopOnce sync.Once
	stopErr  error
}

// StartServer runs riverbank in-process on a free port against dsn
// (migrating it), so peak RSS covers server and load generator together.
// mutate may adjust the configuration.
func StartServer(ctx context.Context, dsn string, logOut io.Writer, mutate func(*config.Config)) (*Server, error) {
	return startServer(ctx, dsn, logOut, func(string) string { return "" }, mutate)
}

// StartServerEnv is StartServer with the settings read through getenv
// (RIVERBANK_WORKERS, ...) instead of a function.
func StartServerEnv(ctx context.Context, dsn string, logOut io.Writer, getenv func(string) string) (*Server, error) {
	return startServer(ctx, dsn, logOut, getenv, nil)
}

func startServer(ctx context.Context, dsn string, logOut io.Writer, getenv func(string) string, mutate func(*config.Config)) (*Server, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	loader := config.Register(fs, getenv, config.All)
	if err := fs.Parse(nil); err != nil {
		return nil, err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	cfg.DatabaseURL = dsn
	cfg.Addr = "127.0.0.1:0"
	cfg.APITokens = []string{"bench-" + hex.EncodeToString(tok)}
	cfg.Migrate = true
	cfg.LogLevel = slog.LevelWarn
	cfg.COBSchedule = "off"
	cfg.COBScheduleParsed = nil
	if mutate != nil {
		mutate(cfg)
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	app, err := server.New(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	if err := app.Listen(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Server{BaseURL: app.BaseURL(), Token: cfg.APITokens[0], stop: cancel, done: make(chan error, 1)}
	go func() { s.done <- app.Run(runCtx) }()
	select {
	case <-app.Ready():
	case err := <-s.done:
		cancel()
		return nil, fmt.Errorf("server exited before ready: %w", err)
	}
	return s, nil
}

// Stop shuts the server down and waits for it. Calling it again returns
// the first call's result (a second receive from done would block forever:
// bench events stops its server before the webhooks scenario and again on
// return, and hung there).
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stop()
		s.stopErr = <-s.done
	})
	return s.stopErr
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)`)

// Pgbench runs pgbench with the given client count for d on a scratch
// database it creates (and drops) next to adminDSN's, and returns TPS.
// mode is "simple-update" (-N) or "tpcb-like". The scale factor equals the
// client count (at least 1) so clients do not all fight over one branch row.
func Pgbench(ctx context.Context, adminDSN string, clients int, d time.Duration, mode string) (float64, error) {
	bin, err := exec.LookPath("pgbench")
	if err != nil {
		return 0, errors.New("pgbench not found on PATH (Debian: apt-get install postgresql-client)")
	}
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "riverbank_pgbench_" + hex.EncodeToString(suffix)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return 0, fmt.Errorf("create scratch database: %w", err)
	}
	defer admin.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)") //nolint:errcheck
	u, err := url.Parse(adminDSN)
	if err != nil {
		return 0, fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + name
	dsn := u.String()

	scale := max(clients, 1)
	if out, err := exec.CommandContext(ctx, bin, "-i", "-q", "-s", strconv.Itoa(scale), dsn).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	args := []string{"-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, runtime.NumCPU())), "-T", strconv.Itoa(int(max(d.Seconds(), 1)))}
	switch mode {
	case "simple-update":
		args = append(args, "-N")
	case "tpcb-like":
	default:
		return 0, fmt.Errorf("unknown pgbench mode %q", mode)
	}
	out, err := exec.CommandContext(ctx, bin, append(args, dsn)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v: %s", err, out)
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench output has no tps line: %s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// StartCPUProfile writes a CPU profile to path until the returned func is
// called.
func StartCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// CurrentRSS is this process's resident set size now, in bytes (VmRSS on
// Linux; 0 where /proc is missing). Unlike PeakRSS it can go down, so a
// series of it shows whether memory is held or merely touched once.
func CurrentRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0
	}
	return resident * int64(os.Getpagesize())
}

// LoadAverage is the machine's 1-minute load average (0 where /proc is
// missing): the machines benchmarks run on are shared.
func LoadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var one float64
	if _, err := fmt.Sscan(string(b), &one); err != nil {
		return 0
	}
	return one
}
