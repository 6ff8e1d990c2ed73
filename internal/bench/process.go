package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessOptions configure StartServerProcess.
type ProcessOptions struct {
	// Binary is the riverbank executable, run as `Binary serve`. Empty:
	// this process's own executable, which is riverbank when called from a
	// `riverbank bench` scenario (a test builds the binary first).
	Binary string
	// DatabaseURL is the database to serve (required). It must already be
	// migrated unless Env sets RIVERBANK_MIGRATE=1: several processes
	// migrating one database at once would only wait on each other.
	DatabaseURL string
	// Addr is the listen address; empty picks a free loopback port. A
	// restarted process is given its predecessor's Addr.
	Addr string
	// Token is the API token; empty generates one.
	Token string
	// Env are further settings as KEY=VALUE (RIVERBANK_WORKERS=8, ...),
	// applied after the defaults so they can override them: the defaults
	// are RIVERBANK_LOG_LEVEL=warn and RIVERBANK_COB_SCHEDULE=off (a
	// benchmark that wants the automatic close sets it).
	Env []string
	// Output, if set, also receives the server's stdout and stderr; the
	// last 64 KiB are kept either way for Output and for errors.
	Output io.Writer
	// ReadyTimeout bounds the wait for /readyz (default 30 s).
	ReadyTimeout time.Duration
}

// Process is `riverbank serve` running as its own OS process, so a
// benchmark or a test can run several instances on one database, kill one
// with SIGKILL, and read each one's memory from /proc.
type Process struct {
	// BaseURL is http://host:port of the API.
	BaseURL string
	// Addr is the listen address (host:port).
	Addr string
	// Token is the bearer token the process accepts.
	Token string
	// PID is the operating-system process id. The process's River client
	// id contains "_p<PID>_" (jobs.ClientID), which is how river_leader
	// and a job's attempted_by are matched to a Process.
	PID int

	cmd     *exec.Cmd
	out     *tailBuffer
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

// StartServerProcess starts `riverbank serve` with o and waits until its
// /readyz answers 200. ctx bounds only the start: the process runs until
// Stop or Kill (callers defer one of them). When Addr was left empty and
// the free port it picked was taken meanwhile, it tries another.
func StartServerProcess(ctx context.Context, o ProcessOptions) (*Process, error) {
	if o.DatabaseURL == "" {
		return nil, errors.New("start server process: no database URL")
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("start server process: find own executable: %w", err)
		}
		o.Binary = exe
	}
	if o.Token == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		o.Token = "bench-" + hex.EncodeToString(b)
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	pickPort := o.Addr == ""
	for attempt := 1; ; attempt++ {
		addr := o.Addr
		if pickPort {
			var err error
			if addr, err = FreeAddr(); err != nil {
				return nil, err
			}
		}
		p, err := startProcess(ctx, o, addr)
		if err == nil {
			return p, nil
		}
		if !pickPort || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
}

func startProcess(ctx context.Context, o ProcessOptions, addr string) (*Process, error) {
	p := &Process{
		BaseURL: "http://" + addr, Addr: addr, Token: o.Token,
		out: &tailBuffer{max: 64 << 10}, exited: make(chan struct{}),
	}
	p.cmd = exec.Command(o.Binary, "serve")
	p.cmd.Env = processEnv(o, addr)
	var w io.Writer = p.out
	if o.Output != nil {
		w = io.MultiWriter(p.out, o.Output)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", o.Binary, err)
	}
	p.PID = p.cmd.Process.Pid
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(ctx, o.ReadyTimeout); err != nil {
		_ = p.Kill()
		return nil, err
	}
	return p, nil
}

// processEnv is this process's environment without anything riverbank
// reads, plus the process's settings.
func processEnv(o ProcessOptions, addr string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RIVERBANK_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"DATABASE_URL="+o.DatabaseURL,
		"RIVERBANK_ADDR="+addr,
		"RIVERBANK_API_TOKENS="+o.Token,
		"RIVERBANK_LOG_LEVEL=warn",
		"RIVERBANK_COB_SCHEDULE=off",
	)
	// os/exec keeps the last value of a repeated key.
	return append(env, o.Env...)
}

func (p *Process) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		resp, err := client.Get(p.BaseURL + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answered %d", resp.StatusCode)
		}
		lastErr = err
		select {
		case <-p.exited:
			return fmt.Errorf("riverbank serve (pid %d) exited before it was ready: %v; output:\n%s", p.PID, p.waitErr, p.Output())
		case <-ctx.Done():
			return fmt.Errorf("riverbank serve (pid %d) not ready: %w", p.PID, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("riverbank serve (pid %d) not ready within %s (last: %v); output:\n%s", p.PID, timeout, lastErr, p.Output())
		}
	}
}

// Endpoint is where a Client reaches this process.
func (p *Process) Endpoint() Endpoint { return Endpoint{BaseURL: p.BaseURL, Token: p.Token} }

// Exited is closed when the process has exited (and been reaped).
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitErr is the process's exit status as exec.Cmd.Wait reports it; valid
// once Exited is closed.
func (p *Process) ExitErr() error {
	<-p.exited
	return p.waitErr
}

// Output is the end (64 KiB) of what the process wrote to stdout and
// stderr.
func (p *Process) Output() string { return p.out.String() }

// Kill sends SIGKILL (no shutdown, no leader resignation: a crash) and
// waits for the process to be gone. Killing an exited process is no error.
func (p *Process) Kill() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pid %d: %w", p.PID, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("pid %d still running 10s after SIGKILL", p.PID)
	}
}

// Stop sends SIGTERM (graceful shutdown: drain HTTP, soft-stop River,
// resign leadership) and waits up to timeout, then kills. It returns the
// exit error of a process that did not exit cleanly.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return p.waitErr
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("terminate pid %d: %w", p.PID, err)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("pid %d exited with %v after SIGTERM; output:\n%s", p.PID, p.waitErr, p.Output())
		}
		return nil
	case <-time.After(timeout):
		_ = p.Kill()
		return fmt.Errorf("pid %d did not exit within %s of SIGTERM; killed", p.PID, timeout)
	}
}

// RSS is the process's resident set size now, in bytes (Linux:
// /proc/<pid>/status VmRSS).
func (p *Process) RSS() (int64, error) { return procStatusBytes(p.PID, "VmRSS") }

// PeakRSS is the process's peak resident set size so far, in bytes
// (Linux: VmHWM). Read it before the process exits.
func (p *Process) PeakRSS() (int64, error) { return procStatusBytes(p.PID, "VmHWM") }

// CPUTime is the user plus system CPU time the process has used (Linux:
// utime + stime of /proc/<pid>/stat, in USER_HZ ticks, which the kernel
// ABI fixes at 100 per second).
func (p *Process) CPUTime() (time.Duration, error) { return cpuTime(p.PID) }

// cpuTime reads utime + stime of /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields after it start
	// with the state (field 3), so utime and stime (14, 15) are 11 and 12.
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}

// procStatusBytes reads one "Name:   123 kB" line of /proc/<pid>/status.
func procStatusBytes(pid int, field string) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// FreeAddr returns a loopback host:port that nothing listened on a moment
// ago (for a process that must be told its address up front).
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// tailBuffer keeps the last max bytes written to it; safe for the two
// writers (stdout, stderr) of a process.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
