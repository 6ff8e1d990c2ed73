package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// built is the riverbank binary the process tests (crash, several
// instances, bench scaleout) run: built once per test run, removed by
// TestMain.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// buildRiverbank builds the real binary of this package (once) and returns
// its path.
func buildRiverbank(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			built.err = err
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "riverbank-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "riverbank")
		cmd := exec.Command("go", "build", "-o", built.bin, "./")
		cmd.Dir = wd
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	require.NoError(t, built.err)
	return built.bin
}

// processTests serialises the tests that run server processes of the built
// binary (crash, several instances, bench scaleout): each one paces load
// and kills by the clock, which holds far better without the others'
// servers on the same cores. They stay parallel to every other test.
var processTests sync.Mutex

// serialProcessTest waits for the other process tests to finish; call it
// after t.Parallel and the -short skip.
func serialProcessTest(t *testing.T) {
	t.Helper()
	processTests.Lock()
	t.Cleanup(processTests.Unlock)
}

func removeBuiltRiverbank() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}
