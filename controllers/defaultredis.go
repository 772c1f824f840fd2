package controllers

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/controllers/workloads"
)

// DefaultRedisFlags are the manager's settings for its default Redis, the one channels without
// spec.redis use.
type DefaultRedisFlags struct {
	Addresses    string // comma-separated seeds
	Username     string
	PasswordFile string
	TLS          bool
	CAFile       string // PEM CA bundle; empty: the system roots
	ServerName   string
}

// Load reads the password and CA files. It returns how the operator connects, and how the
// channels' relays connect: they get the same TLS settings, with the CA bundle shipped to them in
// each channel's shard map ConfigMap (they run in other namespaces than the operator's files).
func (f DefaultRedisFlags) Load() (redisconf.Options, *workloads.RedisTLS, error) {
	var o redisconf.Options
	for _, a := range strings.Split(f.Addresses, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.Addrs = append(o.Addrs, a)
		}
	}
	o.Username = f.Username
	if f.PasswordFile != "" {
		b, err := os.ReadFile(f.PasswordFile)
		if err != nil {
			return o, nil, fmt.Errorf("--redis-password-file: %w", err)
		}
		o.Password = strings.TrimSpace(string(b))
	}
	if !f.TLS {
		return o, nil, nil
	}
	o.TLS = &tls.Config{ServerName: f.ServerName, MinVersion: tls.VersionTLS12}
	relay := &workloads.RedisTLS{}
	relay.ServerName = f.ServerName
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return o, nil, fmt.Errorf("--redis-tls-ca-file: %w", err)
		}
		o.TLS.RootCAs = x509.NewCertPool()
		if !o.TLS.RootCAs.AppendCertsFromPEM(pem) {
			return o, nil, fmt.Errorf("--redis-tls-ca-file: %s holds no PEM certificate", f.CAFile)
		}
		relay.CAPEM = string(pem)
	}
	return o, relay, nil
}
