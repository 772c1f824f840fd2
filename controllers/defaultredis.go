package controllers

import (
	"errors"
	"fmt"
	"os"
	"strings"

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
		if _, _, _, err := d.ClientCA.load(); err != nil {
			return d, err
		}
	}
	return d, nil
}
