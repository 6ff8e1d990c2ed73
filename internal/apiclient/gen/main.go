// Command gen regenerates the API client (internal/apiclient) from the
// document the API serves, or with -check fails when the committed client
// is stale. Run it from internal/apiclient (go generate does), or pass -dir.
package main

import (
	"flag"
	"fmt"
	"os"

	"riverbank/internal/apiclient/apigen"
)

func main() {
	dir := flag.String("dir", ".", "the apiclient package directory")
	check := flag.Bool("check", false, "only check that the committed files are current; exit 1 when stale")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "apiclient:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	doc, err := apigen.ServedDocument()
	if err != nil {
		return err
	}
	files, err := apigen.Files(dir, doc)
	if err != nil {
		return err
	}
	if check {
		return apigen.Check(dir, files)
	}
	return apigen.Write(dir, files)
}
