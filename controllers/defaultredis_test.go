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

// selfSigned is a PEM certificate, enough for Load, which only checks that the bundle parses.
func selfSigned(t *testing.T) string {
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
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
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
	o, relay, err := DefaultRedisFlags{Addresses: " r1:6379, ,r2:6379", PasswordFile: write("pw", "s3cret\n")}.Load()
	if err != nil || len(o.Addrs) != 2 || o.Password != "s3cret" || o.TLS != nil || relay != nil {
		t.Fatalf("plain: %+v %+v %v", o, relay, err)
	}
	_, _, err = DefaultRedisFlags{TLS: true, CAFile: write("junk", "not a certificate")}.Load()
	if err == nil || !strings.Contains(err.Error(), "--redis-tls-ca-file") {
		t.Fatalf("a CA file without a certificate must be refused, naming the flag: %v", err)
	}
	_, _, err = DefaultRedisFlags{TLS: true, CAFile: filepath.Join(dir, "missing")}.Load()
	if err == nil || !strings.Contains(err.Error(), "--redis-tls-ca-file") {
		t.Fatalf("a missing CA file must be refused, naming the flag: %v", err)
	}
	ca := selfSigned(t)
	o, relay, err = DefaultRedisFlags{TLS: true, CAFile: write("ca.crt", ca)}.Load()
	if err != nil || o.TLS == nil || o.TLS.RootCAs == nil || relay == nil || relay.CAPEM != ca {
		t.Fatalf("TLS with a CA file: the operator trusts it and the relays get it: %+v %+v %v", o.TLS, relay, err)
	}
	o, relay, err = DefaultRedisFlags{TLS: true, ServerName: "redis.example"}.Load()
	if err != nil || o.TLS == nil || o.TLS.ServerName != "redis.example" || relay == nil || relay.ServerName != "redis.example" || relay.CAPEM != "" {
		t.Fatalf("TLS with the system roots: %+v %+v %v", o.TLS, relay, err)
	}
}
