package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"riverbank/internal/config"
	"riverbank/internal/pgcluster"
	"riverbank/internal/server"
)

// devDir holds the private cluster and the dev token; it is git-ignored.
const devDir = ".riverbank"

func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", `Local one-command setup. Uses DATABASE_URL if set; otherwise starts a private
Postgres cluster from the local Postgres binaries in ./`+devDir+`/pgdata (or a
Docker container when only Docker is available), migrates, serves on :8080 and
prints the API docs URL, the River UI URL and the dev token. The private
cluster is stopped on exit; its data is kept for the next run.`, stderr)
	loader := config.Register(fs, getenv, config.All)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel)

	if cfg.DatabaseURL == "" {
		dataDir, err := filepath.Abs(filepath.Join(devDir, "pgdata"))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "starting a private Postgres in %s ...\n", dataDir)
		cluster, err := pgcluster.StartAny(ctx, pgcluster.Options{DataDir: dataDir, Logger: logger, Database: "riverbank"})
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(context.WithoutCancel(ctx)); err != nil {
				logger.Error("stop private postgres", "error", err)
			}
		}()
		cfg.DatabaseURL = cluster.URL
	}
	if len(cfg.APITokens) == 0 && !cfg.AuthOff {
		tok, err := devToken()
		if err != nil {
			return err
		}
		cfg.APITokens = []string{tok}
	}
	cfg.Migrate = true
	// Webhooks work out of the box: receivers on this machine are allowed
	// (unless RIVERBANK_WEBHOOK_ALLOW_PRIVATE is given), and secrets are
	// encrypted with a key kept next to the dev token.
	explicit := getenv("RIVERBANK_WEBHOOK_ALLOW_PRIVATE") != ""
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "webhook-allow-private" })
	if !explicit {
		cfg.WebhookAllowPrivate = true
	}
	if len(cfg.WebhookKeys) == 0 {
		key, err := devWebhookKey()
		if err != nil {
			return err
		}
		cfg.WebhookKeys = [][]byte{key}
	}

	app, err := server.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if err := app.Listen(); err != nil {
		return err
	}
	base := app.BaseURL()
	token := "(auth off)"
	if !cfg.AuthOff {
		token = cfg.APITokens[0]
	}
	fmt.Fprintf(stdout, `
riverbank is running (Ctrl-C to stop)
  API docs:   %[1]s/docs
  OpenAPI:    %[1]s/openapi.json
  River UI:   %[1]s/riverui/   (log in with the dev token)
  Database:   %[2]s
  Dev token:  %[3]s
  Try:        curl -H 'Authorization: Bearer %[3]s' %[1]s/v1/system/info

`, base, redactURL(cfg.DatabaseURL), token)
	return app.Run(ctx)
}

// devToken returns the token stored in .riverbank/dev-token, creating a
// random one the first time so the dev token survives restarts.
func devToken() (string, error) {
	path := filepath.Join(devDir, "dev-token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	tok := "dev-" + hex.EncodeToString(buf)
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", devDir, err)
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write dev token: %w", err)
	}
	return tok, nil
}

// devWebhookKey returns the webhook key stored in .riverbank/webhook-key,
// creating a random one the first time, so subscriptions made in dev keep
// working across restarts.
func devWebhookKey() ([]byte, error) {
	path := filepath.Join(devDir, "webhook-key")
	if b, err := os.ReadFile(path); err == nil {
		if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err == nil && len(key) == 32 {
			return key, nil
		}
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", devDir, err)
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write dev webhook key: %w", err)
	}
	return key, nil
}

func redactURL(u string) string {
	if i := strings.Index(u, "@"); i > 0 {
		if j := strings.Index(u, "://"); j > 0 && j < i {
			userinfo := u[j+3 : i]
			if k := strings.Index(userinfo, ":"); k >= 0 {
				return u[:j+3] + userinfo[:k] + ":***" + u[i:]
			}
		}
	}
	return u
}
