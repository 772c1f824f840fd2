// Package tlsconfig builds the Redis client TLS configuration that the manager and the relay
// both take as --redis-tls-* flags.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files are the --redis-tls-* settings: PEM files and names.
type Files struct {
	CAFile             string // --redis-tls-ca-file; empty: the system roots
	ServerName         string // --redis-tls-server-name
	CertFile, KeyFile  string // --redis-tls-cert-file, --redis-tls-key-file; both or neither
	InsecureSkipVerify bool   // --redis-tls-insecure-skip-verify (relay only; testing only)
}

// Config reads the files and builds the client configuration. It also returns the CA bundle it
// read (nil without CAFile), for callers that pass it on.
func (f Files) Config() (*tls.Config, []byte, error) {
	cfg := &tls.Config{ServerName: f.ServerName, InsecureSkipVerify: f.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in, documented as for testing only
	var ca []byte
	if f.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(f.CAFile); err != nil {
			return nil, nil, fmt.Errorf("--redis-tls-ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(ca) {
			return nil, nil, fmt.Errorf("--redis-tls-ca-file: %s holds no PEM certificate", f.CAFile)
		}
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, nil, errors.New("--redis-tls-cert-file and --redis-tls-key-file go together")
	}
	if f.CertFile != "" {
		getCert := ClientCertificateFiles(f.CertFile, f.KeyFile)
		if _, err := getCert(nil); err != nil {
			return nil, nil, err
		}
		cfg.GetClientCertificate = getCert
	}
	return cfg, ca, nil
}

// ClientCertificateFiles is a tls.Config.GetClientCertificate that reads the PEM certificate and
// key files at every handshake. Redis connections are pooled, so handshakes are rare, and a
// certificate renewed on disk (a mounted Secret that cert-manager rotates) is used from the next
// connection on without a restart.
func ClientCertificateFiles(certFile, keyFile string) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("Redis client certificate from --redis-tls-cert-file and --redis-tls-key-file (%s, %s): %w", certFile, keyFile, err)
		}
		return &c, nil
	}
}
