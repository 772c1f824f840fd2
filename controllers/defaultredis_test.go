package controllers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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
	if d.ClientCA != (ClientCA{}) {
		t.Fatal("without a client CA the relays must get no certificate (never the operator's)")
	}
	d, err = DefaultRedisFlags{TLS: true, ClientCAFile: write("cca.crt", ca), ClientCAKeyFile: write("cca.key", key)}.Load()
	if err != nil || d.ClientCA.CertFile == "" {
		t.Fatalf("a client CA: %+v %v", d, err)
	}
	// The relays' CA must be theirs: one that issued the operator's certificate (or is it) is
	// refused, or a tenant's relay certificate would pass at Redis as the operator's does.
	issuedByIt, err := ClientCA{CertFile: write("cca.crt", ca), KeyFile: write("cca.key", key)}.relayClientCert(nil, "herald-operator", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]string{"the CA itself": ca, "a certificate it issued": string(issuedByIt["tls.crt"])} {
		certKey := key
		if name != "the CA itself" {
			certKey = string(issuedByIt["tls.key"])
		}
		_, err := DefaultRedisFlags{TLS: true, CertFile: write("op.crt", cert), KeyFile: write("op.key", certKey),
			ClientCAFile: write("cca.crt", ca), ClientCAKeyFile: write("cca.key", key)}.Load()
		if err == nil || !strings.Contains(err.Error(), "a CA of their own") {
			t.Errorf("the operator's certificate is %s of the relays' client CA: %v; want it refused", name, err)
		}
	}
	other, otherKey := selfSigned(t)
	if _, err := (DefaultRedisFlags{TLS: true, CertFile: write("op.crt", other), KeyFile: write("op.key", otherKey),
		ClientCAFile: write("cca.crt", ca), ClientCAKeyFile: write("cca.key", key)}).Load(); err != nil {
		t.Errorf("an operator certificate of another CA: %v; want it accepted", err)
	}
	if _, err := (DefaultRedisFlags{TLS: true, ClientCAFile: write("cca2.crt", ca)}).Load(); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("a client CA without its key: %v", err)
	}
	d, err = DefaultRedisFlags{TLS: true, ServerName: "redis.example"}.Load()
	if err != nil || d.Options.TLS.ServerName != "redis.example" || d.RelayTLS.ServerName != "redis.example" || d.RelayTLS.CAPEM != "" {
		t.Fatalf("TLS with the system roots: %+v %v", d, err)
	}
}

// The relays' client certificate: issued by the client CA for the channel's user, with a key of
// its own; kept while good; re-issued near its end, for another name, or after a CA change.
func TestRelayClientCertificates(t *testing.T) {
	dir := t.TempDir()
	issuer := func(name string) ClientCA {
		ca, key := selfSigned(t)
		c := ClientCA{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
		for p, v := range map[string]string{c.CertFile: ca, c.KeyFile: key} {
			if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	ca := issuer("ca")
	now := time.Now()
	data, err := ca.relayClientCert(nil, "herald.shop.orders", now)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(data["tls.crt"], data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	caCert, _, caPEM, _ := ca.load()
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}
	opts.Roots.AddCert(caCert)
	if _, err := leaf.Verify(opts); err != nil || leaf.Subject.CommonName != "herald.shop.orders" {
		t.Fatalf("the certificate does not verify as a client certificate of the CA for the channel: %v (%s)", err, leaf.Subject)
	}
	if caKey, _ := os.ReadFile(ca.KeyFile); strings.Contains(string(data["tls.key"]), string(caKey)) || !strings.HasSuffix(string(data["tls.crt"]), string(caPEM)) {
		t.Fatal("the Secret must hold a key of its own and the chain up to the CA")
	}
	if again, _ := ca.relayClientCert(data, "herald.shop.orders", now.Add(24*time.Hour)); string(again["tls.key"]) != string(data["tls.key"]) {
		t.Fatal("a good certificate was re-issued")
	}
	for what, renewed := range map[string]func() (map[string][]byte, error){
		"near its end": func() (map[string][]byte, error) {
			return ca.relayClientCert(data, "herald.shop.orders", now.Add(61*24*time.Hour))
		},
		"another name": func() (map[string][]byte, error) { return ca.relayClientCert(data, "herald.shop.billing", now) },
		"another CA": func() (map[string][]byte, error) {
			return issuer("ca2").relayClientCert(data, "herald.shop.orders", now)
		},
		"a broken pair": func() (map[string][]byte, error) {
			return ca.relayClientCert(map[string][]byte{"tls.crt": data["tls.crt"]}, "herald.shop.orders", now)
		},
	} {
		got, err := renewed()
		if err != nil || string(got["tls.key"]) == string(data["tls.key"]) {
			t.Errorf("%s: the certificate was not re-issued (%v)", what, err)
		}
	}
}
