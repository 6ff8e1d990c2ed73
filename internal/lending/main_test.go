package lending_test

import (
	"testing"

	"riverbank/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }
