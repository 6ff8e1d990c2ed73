package webhook_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank/internal/webhook"
)

// internalV4 are the IPv4 ranges docs/security.md and the README promise
// no webhook reaches, written out independently of webhook.Forbidden's
// table.
var internalV4 = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
	"192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)

// internalV6 are the IPv6 ranges likewise.
var internalV6 = mustPrefixes("::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "2001:db8::/32", "fec0::/10")

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// embeddedV4 returns the IPv4 address an IPv6 address carries where
// packets to it reach that IPv4 address: IPv4-mapped ::ffff:0:0/96,
// NAT64 64:ff9b::/96 and 6to4 2002::/16.
func embeddedV4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case ip.Is4In6():
		return ip.Unmap(), true
	case netip.MustParsePrefix("64:ff9b::/96").Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case netip.MustParsePrefix("2002::/16").Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

func internal(ip netip.Addr) bool {
	if ip.Is4() {
		for _, p := range internalV4 {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	}
	for _, p := range internalV6 {
		if p.Contains(ip) {
			return true
		}
	}
	if v4, ok := embeddedV4(ip); ok {
		return internal(v4)
	}
	return false
}

// FuzzForbidden: the SSRF rule refuses every address in a documented
// internal range, however it is written (IPv4, IPv4-mapped, NAT64, 6to4,
// with a zone), and never panics.
func FuzzForbidden(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "8.8.8.8", "::1", "::ffff:127.0.0.1", "::ffff:8.8.8.8",
		"64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "2002:808:808::1", "fe80::1%eth0", "fd00::1", "2606:4700::1", "ff02::1", "0.0.0.0", "255.255.255.255"} {
		a := netip.MustParseAddr(s)
		f.Add(a.AsSlice(), a.Zone())
	}
	f.Fuzz(func(t *testing.T, raw []byte, zone string) {
		var ip netip.Addr
		switch len(raw) {
		case 4:
			ip = netip.AddrFrom4([4]byte(raw))
		case 16:
			ip = netip.AddrFrom16([16]byte(raw))
			if zone != "" {
				ip = ip.WithZone(zone)
			}
		default:
			t.Skip("not an address")
		}
		reason := webhook.Forbidden(ip)
		if internal(ip.WithZone("")) {
			require.NotEmpty(t, reason, "%s is internal but allowed", ip)
		}
	})
}
