package controllers

import (
	"context"
	"net"
	"net/netip"
	"path"
	"strings"
	"time"
)

// An addressList is --allowed-redis-addresses: the host:port a channel's spec.redis may name
// and its Redis nodes may announce. The operator sends a Secret of the channel's namespace to
// such an address as the password, so an entry is matched by what the address is, never as
// text: PORT is a number or *, and HOST is one of
//
//	10.0.3.0/24, 10.0.3.7   a network or an address: an IP literal in it matches, and so does a
//	                        name whose every address (resolved now) is in it
//	redis-*.data.svc        a DNS name, matched label by label: * stays within one label, so
//	                        redis-*.data.svc matches redis-0.data.svc but not
//	                        redis-0.evil.data.svc nor redis-0.data.svc.evil.example
//	10.0.3.*                an IPv4 pattern, label by label, matching IP literals only
//
// (path.Match's * crosses dots: "10.0.3.*:*" let "10.0.3.attacker.example:6379" in.)
type addressList []string

// resolveTimeout bounds the lookup of a name matched against a network.
const resolveTimeout = 2 * time.Second

// lookupHost resolves a name for the networks of the list (a seam for tests).
var lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// allows reports whether addr (host:port) matches an entry of the list.
func (l addressList) allows(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return false
	}
	ip, ipErr := netip.ParseAddr(host)
	var resolved []netip.Addr // looked up once, for the first network entry that needs it
	for _, entry := range l {
		eHost, ePort, err := net.SplitHostPort(strings.TrimSpace(entry))
		if err != nil || (ePort != "*" && ePort != port) {
			continue
		}
		switch {
		case isNetwork(eHost):
			prefix := toPrefix(eHost)
			if ipErr == nil {
				if prefix.Contains(ip.Unmap()) {
					return true
				}
				continue
			}
			if resolved == nil {
				ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
				resolved, _ = lookupHost(ctx, host)
				cancel()
				if resolved == nil {
					resolved = []netip.Addr{} // looked up: nothing
				}
			}
			if len(resolved) > 0 && allIn(resolved, prefix) {
				return true
			}
		case isIPv4Pattern(eHost):
			if ipErr == nil && ip.Is4() && labelsMatch(eHost, host) {
				return true
			}
		default:
			if ipErr != nil && labelsMatch(strings.ToLower(eHost), strings.ToLower(strings.TrimSuffix(host, "."))) {
				return true
			}
		}
	}
	return false
}

// isNetwork reports whether an entry's host is a CIDR or an IP literal.
func isNetwork(h string) bool {
	if _, err := netip.ParsePrefix(h); err == nil {
		return true
	}
	_, err := netip.ParseAddr(h)
	return err == nil
}

// toPrefix reads a CIDR, or an IP as the network of that address alone.
func toPrefix(h string) netip.Prefix {
	if p, err := netip.ParsePrefix(h); err == nil {
		return p.Masked()
	}
	a, _ := netip.ParseAddr(h)
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
}

// isIPv4Pattern reports whether h is four labels of digits or wildcards, e.g. 10.0.3.*.
func isIPv4Pattern(h string) bool {
	labels := strings.Split(h, ".")
	if len(labels) != 4 {
		return false
	}
	for _, l := range labels {
		if l == "" || strings.Trim(l, "0123456789*?[]-") != "" {
			return false
		}
	}
	return true
}

// labelsMatch matches a name against a pattern label by label (path.Match within each).
func labelsMatch(pattern, name string) bool {
	pl, nl := strings.Split(pattern, "."), strings.Split(name, ".")
	if len(pl) != len(nl) {
		return false
	}
	for i := range pl {
		if ok, _ := path.Match(pl[i], nl[i]); !ok || nl[i] == "" {
			return false
		}
	}
	return true
}

func allIn(addrs []netip.Addr, p netip.Prefix) bool {
	for _, a := range addrs {
		if !p.Contains(a.Unmap()) {
			return false
		}
	}
	return true
}
