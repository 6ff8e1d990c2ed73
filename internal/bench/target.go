package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Target is the riverbank server a benchmark drives: `riverbank serve` as
// its own OS process (the default of the throughput benchmarks, so the
// server's CPU and memory are told apart from the load generator's), or
// the server inside the benchmark process.
type Target struct {
	Endpoint Endpoint
	proc     *Process
	srv      *Server
}

// TargetOptions configure StartTarget.
type TargetOptions struct {
	// Process runs the server as its own process (`riverbank serve`,
	// migrating the database at start); false runs it in this process.
	Process bool
	// Env are the server's settings as KEY=VALUE (RIVERBANK_WORKERS=8,
	// ...); the in-process server reads them the same way.
	Env []string
	// Log receives the server's log.
	Log io.Writer
}

// StartTarget starts the server for a benchmark on dsn.
func StartTarget(ctx context.Context, dsn string, o TargetOptions) (*Target, error) {
	if o.Process {
		p, err := StartServerProcess(ctx, ProcessOptions{DatabaseURL: dsn, Env: append([]string{"RIVERBANK_MIGRATE=1"}, o.Env...), Output: o.Log})
		if err != nil {
			return nil, err
		}
		return &Target{Endpoint: p.Endpoint(), proc: p}, nil
	}
	env := map[string]string{}
	for _, kv := range o.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	srv, err := StartServerEnv(ctx, dsn, o.Log, func(k string) string { return env[k] })
	if err != nil {
		return nil, err
	}
	return &Target{Endpoint: srv.Endpoint(), srv: srv}, nil
}

// Separate reports whether the server runs as its own process.
func (t *Target) Separate() bool { return t.proc != nil }

// Stop stops the server.
func (t *Target) Stop() error {
	if t.proc != nil {
		return t.proc.Stop(30 * time.Second)
	}
	return t.srv.Stop()
}

// CPU is a reading of the CPU time used so far by the server process, this
// (load-generating) process and the Postgres server's processes on this
// machine. With the server in this process, Server is zero and Self
// covers both.
type CPU struct {
	Server, Self, Postgres time.Duration
}

// CPU reads the CPU times now.
func (t *Target) CPU() CPU {
	var c CPU
	if t.proc != nil {
		c.Server, _ = t.proc.CPUTime()
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.Self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c.Postgres = postgresCPU()
	return c
}

// Sub is the CPU used between b and c.
func (c CPU) Sub(b CPU) CPU {
	return CPU{Server: c.Server - b.Server, Self: c.Self - b.Self, Postgres: c.Postgres - b.Postgres}
}

// PerOp formats c divided over n operations.
func (c CPU) PerOp(n int, sep bool) string {
	if n <= 0 {
		return "n/a"
	}
	per := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000/float64(n)) }
	if sep {
		return fmt.Sprintf("server %s, load generator %s, postgres %s", per(c.Server), per(c.Self), per(c.Postgres))
	}
	return fmt.Sprintf("server + load generator %s, postgres %s", per(c.Self), per(c.Postgres))
}

// PeakRSS is the server's peak resident memory: the server process's, or
// this process's (server and load generator) when it runs in-process.
func (t *Target) PeakRSS() int64 {
	if t.proc != nil {
		n, _ := t.proc.PeakRSS()
		return n
	}
	return PeakRSS()
}

// postgresCPU sums the CPU time of every process named postgres on this
// machine (Linux /proc; zero elsewhere): the benchmarked database server,
// when it runs here, and anything else it runs.
func postgresCPU() time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		if d, err := cpuTime(pid); err == nil {
			total += d
		}
	}
	return total
}
