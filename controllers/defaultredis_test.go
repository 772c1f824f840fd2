package controllers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned is a PEM certificate and its key, enough for Load, which only checks that they parse.
func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald-test-ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: k}))
}

func TestDefaultRedisFlagsLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	d, err := DefaultRedisFlags{Addresses: " r1:6379, ,r2:6379", PasswordFile: write("pw", "s3cret\n")}.Load()
	if o := d.Options; err != nil || len(o.Addrs) != 2 || o.Password != "s3cret" || o.TLS != nil || d.RelayTLS != nil {
		t.Fatalf("plain: %+v %v", d, err)
	}
	for name, tc := range map[string]struct {
		flags   DefaultRedisFlags
		mention string
	}{
		"CA without a certificate": {DefaultRedisFlags{TLS: true, CAFile: write("junk", "not a certificate")}, "--redis-tls-ca-file"},
		"missing CA":               {DefaultRedisFlags{TLS: true, CAFile: filepath.Join(dir, "missing")}, "--redis-tls-ca-file"},
		"TLS flag missing":         {DefaultRedisFlags{CAFile: write("ca0", "x")}, "need --redis-tls"},
		"cert without key":         {DefaultRedisFlags{TLS: true, CertFile: write("c0", "x")}, "go together"},
		"cert not PEM":             {DefaultRedisFlags{TLS: true, CertFile: write("c1", "x"), KeyFile: write("k1", "y")}, "--redis-tls-cert-file and --redis-tls-key-file"},
	} {
		if _, err := tc.flags.Load(); err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: want an error naming %q, got %v", name, tc.mention, err)
		}
	}
	ca, key := selfSigned(t)
	d, err = DefaultRedisFlags{TLS: true, CAFile: write("ca.crt", ca), CertFile: write("tls.crt", ca), KeyFile: write("tls.key", key)}.Load()
	if err != nil || d.Options.TLS == nil || d.Options.TLS.RootCAs == nil || d.RelayTLS == nil || d.RelayTLS.CAPEM != ca {
		t.Fatalf("TLS with a CA file: the operator trusts it and the relays get it: %+v %v", d, err)
	}
	if c, err := d.Options.TLS.GetClientCertificate(nil); err != nil || len(c.Certificate) != 1 {
		t.Fatalf("the operator presents the client certificate: %v", err)
	}
	if data, err := d.ClientCert.Secret(); err != nil || string(data["tls.crt"]) != ca || string(data["tls.key"]) != key {
		t.Fatalf("the relays' copy of the client certificate: %v", err)
	}
	d, err = DefaultRedisFlags{TLS: true, ServerName: "redis.example"}.Load()
	if err != nil || d.Options.TLS.ServerName != "redis.example" || d.RelayTLS.ServerName != "redis.example" || d.RelayTLS.CAPEM != "" {
		t.Fatalf("TLS with the system roots: %+v %v", d, err)
	}
}
