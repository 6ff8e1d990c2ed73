package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"riverbank"
)

// MaxURLLength bounds a subscription's URL.
const MaxURLLength = 2048

// lookupTimeout bounds the DNS lookup of a URL's host at create time.
const lookupTimeout = 3 * time.Second

// Resolver resolves a host name to addresses; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// special are address ranges no webhook may reach besides what netip's
// predicates (loopback, private, link-local, multicast, unspecified)
// already cover: addresses that are not on the public internet, or that
// reach this network's own infrastructure.
var special = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "a \"this network\" address"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared (carrier-grade NAT) address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol address"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved or broadcast address"},
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible IPv6 address"},
	{netip.MustParsePrefix("100::/64"), "a discard address"},
	{netip.MustParsePrefix("2001::/32"), "a Teredo address"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address"},
	{netip.MustParsePrefix("fec0::/10"), "a site-local address"},
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Forbidden returns why ip may not be a webhook target ("" when it may):
// loopback, private (RFC 1918, ULA fc00::/7), link-local, unspecified,
// multicast, shared CGNAT 100.64/10 and the other special-purpose ranges.
// IPv4-mapped IPv6 addresses, NAT64 and 6to4 addresses are judged by the
// IPv4 address they carry.
func Forbidden(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return "not an IP address"
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "a link-local address"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	}
	for _, s := range special {
		if s.prefix.Contains(ip) {
			return s.reason
		}
	}
	if ip.Is6() {
		b := ip.As16()
		var v4 [4]byte
		switch {
		case nat64.Contains(ip):
			copy(v4[:], b[12:16])
		case sixToFour.Contains(ip):
			copy(v4[:], b[2:6])
		default:
			return ""
		}
		if r := Forbidden(netip.AddrFrom4(v4)); r != "" {
			return r + " (inside an IPv6 address)"
		}
	}
	return ""
}

// TargetForbiddenError is the dial-time refusal of an address: the
// resolved address of a delivery, checked on the socket about to connect,
// so a name that resolved to a public address at create time and to an
// internal one now (DNS rebinding) is refused all the same.
type TargetForbiddenError struct {
	Addr   netip.Addr
	Reason string
}

func (e *TargetForbiddenError) Error() string {
	return fmt.Sprintf("target forbidden: %s is %s (RIVERBANK_WEBHOOK_ALLOW_PRIVATE is off)", e.Addr, e.Reason)
}

// control refuses to connect a socket to a forbidden address. It runs for
// every address the dialer tries, after resolution, so it judges the
// address actually connected to.
func control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("target forbidden: cannot parse %q", address)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("target forbidden: %q is not an IP address", host)
	}
	if r := Forbidden(ip); r != "" {
		return &TargetForbiddenError{Addr: ip.WithZone(""), Reason: r}
	}
	return nil
}

// maxResponseRead is how much of a receiver's answer is read (and
// discarded, so the connection can be reused); errorSnippet how much of a
// non-2xx body goes into last_error.
const (
	maxResponseRead = 64 << 10
	errorSnippet    = 200
)

// newHTTPClient returns the delivery client: every request bounded by
// timeout, no proxy from the environment (it would be the one connected
// to, and judged, instead of the target), redirects not followed (a 3xx is
// a failed attempt: following one would let a public receiver point the
// next request anywhere), and, unless allowPrivate, a dialer that refuses
// forbidden addresses.
func newHTTPClient(allowPrivate bool, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = control
	}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport:     transport,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// drain reads at most maxResponseRead bytes of a response and returns the
// start of it, for the error of a non-2xx answer.
func drain(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, maxResponseRead))
	if len(b) > errorSnippet {
		b = b[:errorSnippet]
	}
	s := strings.ToValidUTF8(strings.ReplaceAll(string(b), "\x00", ""), "")
	return strings.TrimSpace(s)
}

// describeError turns a delivery's transport error into a short text
// without the URL (which may carry a receiver's token in its query).
func describeError(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var tf *TargetForbiddenError
	switch {
	case errors.As(err, &tf):
		return tf.Error()
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "no answer within " + timeout.String()
	case errors.Is(err, context.Canceled):
		return "cancelled (riverbank is shutting down)"
	}
	msg := err.Error()
	if len(msg) > 300 {
		msg = msg[:300]
	}
	return strings.ToValidUTF8(msg, "")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ParseURL checks a subscription's URL: http or https, a host, no user
// information (credentials in a URL end up in logs; receivers
// authenticate riverbank by the signature), no fragment, at most
// MaxURLLength characters.
func ParseURL(raw string) (*url.URL, error) {
	bad := func(format string, args ...any) error {
		return riverbank.Errorf(riverbank.EINVALID, format, args...).WithDetail("field", "url")
	}
	if raw == "" {
		return nil, bad("url is required")
	}
	if len(raw) > MaxURLLength {
		return nil, bad("url must be at most %d characters", MaxURLLength)
	}
	if !riverbank.ValidText(raw) || strings.ContainsAny(raw, " \t\r\n") {
		return nil, bad("url must not contain whitespace, NUL or invalid UTF-8")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, bad("url is not a valid URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	default:
		return nil, bad("url must be an http or https URL")
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, bad("url must have a host (scheme://host/path)")
	}
	if u.User != nil {
		return nil, bad("url must not contain user information (user:password@): receivers authenticate riverbank by the Riverbank-Signature header")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, bad("url must not have a fragment (#...)")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, bad("url has an invalid port")
		}
	}
	return u, nil
}

// checkTarget refuses, unless private targets are allowed, a URL whose
// host is an IP literal in a forbidden range or a name any of whose
// addresses is. It is the early answer to a client; delivery checks the
// address it connects to again (see control).
func (s *Service) checkTarget(ctx context.Context, u *url.URL) error {
	if s.allowPrivate {
		return nil
	}
	host := u.Hostname()
	forbidden := func(ip netip.Addr, reason string) error {
		return riverbank.Errorf(riverbank.EWEBHOOKTARGETFORBIDDEN,
			"url host %s is or resolves to %s (%s): webhook targets must be public unless RIVERBANK_WEBHOOK_ALLOW_PRIVATE=1", host, ip.WithZone(""), reason).
			WithDetail("field", "url").WithDetail("address", ip.WithZone("").String())
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if r := Forbidden(ip); r != "" {
			return forbidden(ip, r)
		}
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := s.resolver.LookupNetIP(lctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return riverbank.Errorf(riverbank.EINVALID, "url host %s does not resolve", host).WithDetail("field", "url")
	}
	for _, ip := range addrs {
		if r := Forbidden(ip); r != "" {
			return forbidden(ip, r)
		}
	}
	return nil
}
