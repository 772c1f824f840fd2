package controllers

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/internal/tlsconfig"
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
	CertFile     string // PEM client certificate, for servers that ask for one; with KeyFile
	KeyFile      string
	// ClientCAFile and ClientCAKeyFile: a CA the Redis trusts for client certificates, from
	// which each channel's relays get one of their own.
	ClientCAFile, ClientCAKeyFile string
}

// DefaultRedis is the operator's default Redis as its flags describe it.
type DefaultRedis struct {
	Options  redisconf.Options   // how the operator connects
	RelayTLS *workloads.RedisTLS // how the channels' relays connect; nil: plain TCP
	// ClientCA issues each channel's relays a client certificate of their own, for a Redis
	// that asks for one; zero: relays present none. The operator's own certificate
	// (--redis-tls-cert-file) is never handed out.
	ClientCA ClientCA
}

// Load reads the password, CA and client certificate files. The relays get the operator's TLS
// settings, with the CA bundle shipped in each channel's shard map ConfigMap and, given a client
// CA, a client certificate of their own in a Secret of the channel's.
func (f DefaultRedisFlags) Load() (DefaultRedis, error) {
	var d DefaultRedis
	o := &d.Options
	for _, a := range strings.Split(f.Addresses, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.Addrs = append(o.Addrs, a)
		}
	}
	o.Username = f.Username
	if f.PasswordFile != "" {
		b, err := os.ReadFile(f.PasswordFile)
		if err != nil {
			return d, fmt.Errorf("--redis-password-file: %w", err)
		}
		o.Password = strings.TrimSpace(string(b))
	}
	if !f.TLS {
		if f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" || f.ServerName != "" || f.ClientCAFile != "" || f.ClientCAKeyFile != "" {
			return d, errors.New("the --redis-tls-* flags need --redis-tls")
		}
		return d, nil
	}
	cfg, ca, err := tlsconfig.Files{CAFile: f.CAFile, ServerName: f.ServerName, CertFile: f.CertFile, KeyFile: f.KeyFile}.Config()
	if err != nil {
		return d, err
	}
	o.TLS = cfg
	d.RelayTLS = &workloads.RedisTLS{CAPEM: string(ca)}
	d.RelayTLS.ServerName = f.ServerName
	if (f.ClientCAFile == "") != (f.ClientCAKeyFile == "") {
		return d, errors.New("--redis-tls-client-ca-file and --redis-tls-client-ca-key-file go together")
	}
	if f.ClientCAFile != "" {
		d.ClientCA = ClientCA{CertFile: f.ClientCAFile, KeyFile: f.ClientCAKeyFile}
		ca, _, _, err := d.ClientCA.load()
		if err != nil {
			return d, err
		}
		if f.CertFile != "" && issued(f.CertFile, ca) {
			// Redis trusts a CA, not a certificate: a relay's certificate from it would pass
			// wherever the operator's does (as the default user, where that needs no password).
			return d, errors.New("--redis-tls-client-ca-file issued the operator's own certificate (--redis-tls-cert-file): " +
				"a certificate it gave a channel's relays would be as good as the operator's at Redis; give the relays a CA of their own")
		}
	}
	return d, nil
}

// issued reports whether the first certificate of certFile chains to ca (through the file's
// other certificates), or is ca itself.
func issued(certFile string, ca *x509.Certificate) bool {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return false // tlsconfig has read it already; a file gone since is not this check's concern
	}
	var chain []*x509.Certificate
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			chain = append(chain, c)
		}
	}
	if len(chain) == 0 {
		return false
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca)
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if chain[0].Equal(ca) {
		return true
	}
	// Now, and at times the certificate or the CA was valid: an expired certificate was still
	// issued by ca.
	for _, at := range []time.Time{time.Now(), chain[0].NotBefore.Add(time.Second), ca.NotBefore.Add(time.Second)} {
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: at}); err == nil {
			return true
		}
	}
	return false
}
