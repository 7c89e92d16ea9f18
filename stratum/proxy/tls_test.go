package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// testPKI is a CA and a leaf certificate it signed for 127.0.0.1 and
// pool.test, as a TLS pool would present.
type testPKI struct {
	caFile  string
	leaf    tls.Certificate
	certSHA string // sha256 of the leaf's DER
	spkiSHA string // sha256 of the leaf's SubjectPublicKeyInfo
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxyd test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pool.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"pool.test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafCert, _ := x509.ParseCertificate(leafDER)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, s := sha256.Sum256(leafDER), sha256.Sum256(leafCert.RawSubjectPublicKeyInfo)
	return testPKI{caFile: caFile, leaf: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
		certSHA: hex.EncodeToString(c[:]), spkiSHA: hex.EncodeToString(s[:])}
}

// tlsPool terminates TLS in front of a stratumtest pool, as a pool's TLS port
// does. It counts connections whose first byte is not a TLS handshake: a
// plain-text attempt from proxyd would show there.
type tlsPool struct {
	ln        net.Listener
	plaintext atomic.Int64
	handshook atomic.Int64
	wg        sync.WaitGroup
}

func newTLSPool(t *testing.T, pool *stratumtest.Pool, cert tls.Certificate) *tlsPool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tlsPool{ln: ln}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	tp.wg.Add(1)
	go func() {
		defer tp.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tp.wg.Add(1)
			go func() {
				defer tp.wg.Done()
				tp.serve(c, cfg, pool.Addr())
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); tp.wg.Wait() })
	return tp
}

func (tp *tlsPool) serve(c net.Conn, cfg *tls.Config, upstream string) {
	defer c.Close()
	first := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, first); err != nil {
		return
	}
	if first[0] != 0x16 { // not a TLS handshake record
		tp.plaintext.Add(1)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	tc := tls.Server(&prefixConn{Conn: c, prefix: first}, cfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	tp.handshook.Add(1)
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, tc); done <- struct{}{} }()
	go func() { _, _ = io.Copy(tc, up); done <- struct{}{} }()
	<-done
}

func (tp *tlsPool) url() string { return "stratum+ssl://" + tp.ln.Addr().String() }

// prefixConn replays bytes already read before the rest of the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// TestTLSPool: a stratum+ssl pool is spoken to over TLS, unpinned and
// pinned; a certificate proxyd cannot trust, a wrong name or a wrong pin
// is refused with a clear error, and proxyd never falls back to plain text.
func TestTLSPool(t *testing.T) {
	pki := newTestPKI(t)
	tests := []struct {
		name    string
		extra   string
		host    string // instead of 127.0.0.1 in the url
		wantErr string // "" = the pool must work
	}{
		{name: "CA file, unpinned", extra: `ca_file = "` + pki.caFile + `"`},
		{name: "pinned to the SPKI", extra: `ca_file = "` + pki.caFile + `"` + "\n" + `tls_pin_sha256 = ["` + pki.spkiSHA + `"]`},
		{name: "pinned to the certificate, colon form", extra: `ca_file = "` + pki.caFile + `"` + "\n" + `tls_pin_sha256 = ["` + colons(pki.certSHA) + `"]`},
		{name: "server name override", extra: `ca_file = "` + pki.caFile + `"` + "\n" + `tls_server_name = "pool.test"`},
		{name: "untrusted (system roots)", wantErr: "certificate signed by unknown authority"},
		{name: "wrong pin", extra: `ca_file = "` + pki.caFile + `"` + "\n" + `tls_pin_sha256 = ["` + strings.Repeat("ab", 32) + `"]`, wantErr: "matches no tls_pin_sha256"},
		{name: "wrong name", extra: `ca_file = "` + pki.caFile + `"` + "\n" + `tls_server_name = "other.test"`, wantErr: "certificate is valid for pool.test, not other.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, JobInterval: 250 * time.Millisecond})
			front := newTLSPool(t, pool, pki.leaf)
			start := startProxyURLs
			if tt.wantErr != "" {
				start = startProxyUnready // its pool never becomes healthy
			}
			px := start(t, []string{front.url()}, []int{0}, "", tt.extra)
			if tt.wantErr == "" {
				if err := px.Ready(); err != nil {
					t.Fatalf("TLS pool not ready: %v", err)
				}
				ctx := ctxFor(t, 30*time.Second)
				m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.tls"})
				if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
					t.Fatalf("share through the TLS pool: %+v, %v", r, err)
				}
			} else {
				err := waitPoolError(px, tt.wantErr)
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("pool error %v, want one naming %q", err, tt.wantErr)
				}
				if px.Ready() == nil {
					t.Fatal("proxy ready on a pool whose certificate it refused")
				}
			}
			if n := front.plaintext.Load(); n != 0 {
				t.Fatalf("%d plain-text connection(s) reached the TLS port", n)
			}
		})
	}
}

// waitPoolError waits (bounded) for the pool's last connection error.
func waitPoolError(px *testProxy, want string) error {
	var last error
	for i := 0; i < 200; i++ {
		for _, srv := range px.servers {
			for _, pl := range srv.pools {
				pl.mu.Lock()
				last = pl.lastErr
				pl.mu.Unlock()
				if last != nil && strings.Contains(last.Error(), want) {
					return last
				}
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	if last == nil {
		return errors.New("no pool error recorded")
	}
	return last
}

func colons(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strings.ToUpper(h[i : i+2]))
	}
	return b.String()
}

func TestNormalizePin(t *testing.T) {
	h := strings.Repeat("0f", 32)
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: h, want: h},
		{in: strings.ToUpper(h), want: h},
		{in: colons(h), want: h},
		{in: " " + h + " ", want: h},
		{in: h[:62], bad: true},
		{in: strings.Repeat("zz", 32), bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		got, err := NormalizePin(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("NormalizePin(%q) = %q, %v", tt.in, got, err)
		}
	}
}
