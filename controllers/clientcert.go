package controllers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ClientCA is a CA that the default Redis trusts for client certificates (its tls-ca-cert-file
// includes it). The operator issues each channel's relays a certificate of their own from it, so
// no namespace ever holds the operator's own client key. The files are read at every use: a CA
// renewed on disk is used from the next reconcile on.
type ClientCA struct{ CertFile, KeyFile string }

// Relay client certificates live 90 days and are renewed with 30 days left.
const (
	clientCertLifetime = 90 * 24 * time.Hour
	clientCertRenewal  = 30 * 24 * time.Hour
)

func (c ClientCA) load() (*x509.Certificate, crypto.Signer, []byte, error) {
	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--redis-tls-client-ca-file: %w", err)
	}
	keyPEM, err := os.ReadFile(c.KeyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--redis-tls-client-ca-key-file: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--redis-tls-client-ca-file and --redis-tls-client-ca-key-file: %w", err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--redis-tls-client-ca-file: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !ca.IsCA {
		return nil, nil, nil, errors.New("--redis-tls-client-ca-file: not a CA certificate with a signing key")
	}
	return ca, signer, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), nil
}

// relayClientCert returns the data of a kubernetes.io/tls Secret with a client certificate for
// name: current (as long as it chains to the CA, matches its key and has more than the renewal
// period left), else newly issued with a new key.
func (c ClientCA) relayClientCert(current map[string][]byte, name string, now time.Time) (map[string][]byte, error) {
	ca, signer, caPEM, err := c.load()
	if err != nil {
		return nil, err
	}
	if stillGood(current, ca, name, now) {
		return current, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"herald relays"}},
		NotBefore:    now.Add(-5 * time.Minute), // clock skew
		NotAfter:     now.Add(clientCertLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("issuing the relays' client certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	// The chain: the leaf, then the CA, so a Redis that trusts only a root above an
	// intermediate CA can still build the path.
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caPEM...)
	return map[string][]byte{
		corev1.TLSCertKey:       chain,
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// stillGood says whether data holds a certificate for name, signed by ca, matching its key,
// with more than the renewal period left.
func stillGood(data map[string][]byte, ca *x509.Certificate, name string, now time.Time) bool {
	pair, err := tls.X509KeyPair(data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || leaf.Subject.CommonName != name || leaf.CheckSignatureFrom(ca) != nil {
		return false
	}
	return now.Before(leaf.NotAfter.Add(-clientCertRenewal)) && !now.Before(leaf.NotBefore)
}
