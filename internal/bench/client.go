package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// Endpoint is a server a Client talks to: its base URL and bearer token.
type Endpoint struct {
	BaseURL string
	Token   string
}

// Endpoint is where a Client reaches s.
func (s *Server) Endpoint() Endpoint { return Endpoint{BaseURL: s.BaseURL, Token: s.Token} }

// Client talks JSON to benchmarked servers with their bearer tokens,
// keeping enough idle connections for every load-generating goroutine.
// With several endpoints (instances on one database) it sends each request
// to the next one in turn.
type Client struct {
	endpoints []Endpoint
	next      atomic.Uint64
	http      *http.Client
}

// NewClient returns a client for s sized for the given concurrency.
func NewClient(s *Server, concurrency int) *Client {
	return NewClientFor(concurrency, s.Endpoint())
}

// NewClientFor returns a client sized for the given concurrency that
// spreads requests round-robin over endpoints (at least one).
func NewClientFor(concurrency int, endpoints ...Endpoint) *Client {
	if len(endpoints) == 0 {
		panic("bench.NewClientFor: no endpoints")
	}
	return &Client{endpoints: endpoints, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        concurrency * 2 * len(endpoints),
			MaxIdleConnsPerHost: concurrency * 2,
		},
	}}
}

// Problem is the part of a problem+json body a benchmark reads.
type Problem struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Do sends a request with an optional JSON body; out (if not nil) receives
// a 2xx body and prob (if not nil) a problem body. It returns the status.
func (c *Client) Do(ctx context.Context, method, path string, body, out any, prob *Problem) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	ep := c.endpoints[0]
	if len(c.endpoints) > 1 {
		ep = c.endpoints[(c.next.Add(1)-1)%uint64(len(c.endpoints))]
	}
	req, err := http.NewRequestWithContext(ctx, method, ep.BaseURL+path, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+ep.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var dst any
	switch {
	case resp.StatusCode < 300 && out != nil:
		dst = out
	case resp.StatusCode >= 400 && prob != nil:
		dst = prob
	}
	if dst == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(dst)
}
