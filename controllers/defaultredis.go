package controllers

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"

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
}

// DefaultRedis is the operator's default Redis as its flags describe it.
type DefaultRedis struct {
	Options  redisconf.Options   // how the operator connects
	RelayTLS *workloads.RedisTLS // how the channels' relays connect; nil: plain TCP
	// ClientCert is the client certificate the operator presents, copied into each channel's
	// namespace for its relays (which cannot read the operator's files); zero: none.
	ClientCert ClientCertFiles
}

// ClientCertFiles are the PEM files of a client certificate and its key.
type ClientCertFiles struct{ Cert, Key string }

// Secret reads the files as the data of a kubernetes.io/tls Secret. They are read at every call,
// so a certificate renewed on disk reaches the relays at the next reconcile.
func (f ClientCertFiles) Secret() (map[string][]byte, error) {
	cert, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("--redis-tls-cert-file: %w", err)
	}
	key, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("--redis-tls-key-file: %w", err)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, fmt.Errorf("--redis-tls-cert-file and --redis-tls-key-file: %w", err)
	}
	return map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}, nil
}

// Load reads the password, CA and client certificate files. The relays get the operator's TLS
// settings, with the CA bundle shipped in each channel's shard map ConfigMap and the client
// certificate in a Secret of the channel's.
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
		if f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" || f.ServerName != "" {
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
	if f.CertFile != "" {
		d.ClientCert = ClientCertFiles{Cert: f.CertFile, Key: f.KeyFile}
	}
	return d, nil
}
