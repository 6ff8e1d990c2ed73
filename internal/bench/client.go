package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// Client talks JSON to a benchmarked server with its bearer token, keeping
// enough idle connections for every load-generating goroutine.
type Client struct {
	base, token string
	http        *http.Client
}

// NewClient returns a client for s sized for the given concurrency.
func NewClient(s *Server, concurrency int) *Client {
	return &Client{base: s.BaseURL, token: s.Token, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2},
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
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
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
