package controllers

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// An allow-list entry matches what an address is, not how it reads: a network contains IP
// literals and names whose every address it contains; a name pattern's * stays within a label.
func TestAddressListMatchesNetworksAndLabels(t *testing.T) {
	names := map[string][]netip.Addr{
		"redis.internal":   {netip.MustParseAddr("10.0.3.9")},
		"half.internal":    {netip.MustParseAddr("10.0.3.9"), netip.MustParseAddr("192.0.2.1")},
		"outside.internal": {netip.MustParseAddr("192.0.2.1")},
	}
	defer func(old func(context.Context, string) ([]netip.Addr, error)) { lookupHost = old }(lookupHost)
	lookupHost = func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := names[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}
	tests := map[string]struct {
		list []string
		addr string
		want bool
	}{
		"an IPv4 pattern no longer takes a name": {[]string{"10.0.3.*:*"}, "10.0.3.attacker.example:6379", false},
		"an IPv4 pattern takes an IP literal":    {[]string{"10.0.3.*:*"}, "10.0.3.4:6379", true},
		"a network takes its addresses":          {[]string{"10.0.3.0/24:6379"}, "10.0.3.200:6379", true},
		"and not another's":                      {[]string{"10.0.3.0/24:6379"}, "10.0.4.1:6379", false},
		"nor another port":                       {[]string{"10.0.3.0/24:6379"}, "10.0.3.1:6380", false},
		"a name whose addresses are in it":       {[]string{"10.0.3.0/24:*"}, "redis.internal:6379", true},
		"a name with one address outside":        {[]string{"10.0.3.0/24:*"}, "half.internal:6379", false},
		"a name outside":                         {[]string{"10.0.3.0/24:*"}, "outside.internal:6379", false},
		"a name that does not resolve":           {[]string{"10.0.3.0/24:*"}, "nowhere.internal:6379", false},
		"one address":                            {[]string{"10.0.3.7:*"}, "10.0.3.7:6379", true},
		"IPv6 in a network":                      {[]string{"[fd00::/8]:*"}, "[fd00::1]:6379", true},
		"a name pattern, one label":              {[]string{"redis-*.data.svc:6379"}, "redis-0.data.svc:6379", true},
		"a name pattern does not cross a dot":    {[]string{"redis-*.data.svc:6379"}, "redis-0.evil.data.svc:6379", false},
		"nor take a suffix":                      {[]string{"redis-*.data.svc:6379"}, "redis-0.data.svc.evil.example:6379", false},
		"four stars are an IPv4 pattern":         {[]string{"*.*.*.*:*"}, "192.0.2.1:6379", true},
		"a name pattern takes no IP literal":     {[]string{"redis-*.svc:*"}, "10.0.3.1:6379", false},
		"case does not matter in names":          {[]string{"redis-*.data.svc:*"}, "REDIS-1.Data.svc:6379", true},
		"a star pattern of one label":            {[]string{"*:*"}, "redis.internal:6379", false},
		"no port":                                {[]string{"10.0.3.0/24:*"}, "10.0.3.1", false},
		"an empty list":                          {nil, "10.0.3.1:6379", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := addressList(tc.list).allows(tc.addr); got != tc.want {
				t.Fatalf("%v allows %s = %v, want %v", tc.list, tc.addr, got, tc.want)
			}
		})
	}
}
