package api

import (
	"embed"
	"io/fs"
	"net/http"
)

// The docs page renders with Stoplight Elements (v9.0.25, Apache-2.0, from
// the npm package @stoplight/elements) served from the binary: huma's
// built-in page loads it from a CDN, which fails on machines without
// internet access.
//
//go:embed docsassets/web-components.min.js docsassets/styles.min.css
var docsAssets embed.FS

const docsHTML = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="referrer" content="no-referrer">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>riverbank API</title>
    <link rel="stylesheet" href="/docs/assets/styles.min.css">
    <script src="/docs/assets/web-components.min.js"></script>
  </head>
  <body style="height: 100vh;">
    <elements-api apiDescriptionUrl="/openapi.yaml" router="hash" layout="sidebar" tryItCredentialsPolicy="same-origin"></elements-api>
  </body>
</html>`

// docsCSP allows only same-origin scripts, styles and fetches.
const docsCSP = "default-src 'none'; base-uri 'none'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; img-src 'self' data:; font-src 'self' data:; script-src 'self'; style-src 'self' 'unsafe-inline'"

func registerDocs(mux *http.ServeMux) {
	mux.HandleFunc("GET /docs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", docsCSP)
		_, _ = w.Write([]byte(docsHTML))
	})
	sub, err := fs.Sub(docsAssets, "docsassets")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	assets := http.StripPrefix("/docs/assets/", http.FileServerFS(sub))
	mux.Handle("GET /docs/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		assets.ServeHTTP(w, r)
	}))
}
