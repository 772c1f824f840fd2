// Package tlsconfig holds the TLS pieces the manager and the relay share for their Redis
// connections.
package tlsconfig

import (
	"crypto/tls"
	"fmt"
)

// ClientCertificateFiles is a tls.Config.GetClientCertificate that reads the PEM certificate and
// key files at every handshake. Redis connections are pooled, so handshakes are rare, and a
// certificate renewed on disk (a mounted Secret that cert-manager rotates) is used from the next
// connection on without a restart.
func ClientCertificateFiles(certFile, keyFile string) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("Redis client certificate %s / %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}
}
