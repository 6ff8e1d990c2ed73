package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// DockerImage is the image StartDocker runs.
const DockerImage = "postgres:16-alpine"

// dockerProbeTimeout bounds the check that a Docker engine answers, so that
// a missing or wedged engine fails fast instead of hanging.
const dockerProbeTimeout = 2 * time.Second

// StartDocker runs a throwaway PostgreSQL in a Docker container (image
// DockerImage, via testcontainers-go), with Options.Database created and
// user/password postgres/postgres. Options.DataDir is ignored: the data goes
// away with the container on Stop. Options.Port, if set, is bound on
// 127.0.0.1; otherwise Docker picks a port.
//
// It first checks, within about two seconds, that a Docker engine answers;
// if not, the error wraps ErrNoDocker.
func StartDocker(ctx context.Context, opts Options) (c *Cluster, err error) {
	log := opts.logger()
	if err := dockerAvailable(ctx); err != nil {
		return nil, err
	}
	// testcontainers panics in some misconfigurations (e.g. when it cannot
	// find a Docker host); never let that take the caller down.
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("pgcluster: %w: testcontainers panicked: %v", ErrNoDocker, r)
		}
	}()

	begin := time.Now()
	db := opts.database()
	customizers := []testcontainers.ContainerCustomizer{
		testcontainers.WithLogger(slogPrintf{log}),
		tcpostgres.WithDatabase(db),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
	}
	if opts.Port != 0 {
		customizers = append(customizers, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = nat.PortMap{"5432/tcp": {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(opts.Port)}}}
		}))
	}
	ctr, err := tcpostgres.Run(ctx, DockerImage, customizers...)
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, fmt.Errorf("pgcluster: start %s container: %w", DockerImage, err)
	}
	url, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err == nil {
		var port nat.Port
		if port, err = ctr.MappedPort(ctx, "5432/tcp"); err == nil {
			c = &Cluster{URL: url, Kind: KindDocker, Port: port.Int()}
		}
	}
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, fmt.Errorf("pgcluster: inspect %s container: %w", DockerImage, err)
	}
	c.stop = func(ctx context.Context) error {
		if err := testcontainers.TerminateContainer(ctr, testcontainers.StopContext(ctx)); err != nil {
			return fmt.Errorf("pgcluster: terminate container: %w", err)
		}
		log.Info("pgcluster: Docker PostgreSQL stopped")
		return nil
	}
	log.Info("pgcluster: Docker PostgreSQL ready", "url", c.URL, "took", time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// dockerAvailable returns nil if a Docker engine answers a ping within
// dockerProbeTimeout, else an error wrapping ErrNoDocker.
func dockerAvailable(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, dockerProbeTimeout)
	defer cancel()
	defer func() {
		// testcontainers panics when it finds no Docker host at all.
		if r := recover(); r != nil {
			err = fmt.Errorf("pgcluster: %w: no Docker host found (looked at DOCKER_HOST, the docker "+
				"context, ~/.testcontainers.properties, /var/run/docker.sock and the rootless socket): %v",
				ErrNoDocker, r)
		}
	}()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("pgcluster: %w: %w", ErrNoDocker, err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("pgcluster: %w: engine did not answer within %s: %w", ErrNoDocker, dockerProbeTimeout, err)
		}
		return fmt.Errorf("pgcluster: %w: %w", ErrNoDocker, err)
	}
	return nil
}

// slogPrintf adapts a slog.Logger to testcontainers' Printf logger, at
// debug level (testcontainers is chatty).
type slogPrintf struct{ log *slog.Logger }

func (s slogPrintf) Printf(format string, v ...any) {
	s.log.Debug("testcontainers: " + fmt.Sprintf(format, v...))
}
