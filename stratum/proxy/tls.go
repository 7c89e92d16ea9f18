package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// PoolTLS is how proxyd speaks TLS to a pool (stratum+ssl:// or
// stratum+tls://). The zero value means plain TCP.
type PoolTLS struct {
	Enabled bool
	// CAFile is a PEM bundle of roots to trust instead of the system's.
	CAFile string
	// ServerName overrides the name checked in the pool's certificate (and
	// sent as SNI); empty means the URL's host.
	ServerName string
	// PinSHA256 lists SHA-256 digests (hex) of the leaf certificate (DER) or
	// of its SubjectPublicKeyInfo; if set, the leaf must match one of them in
	// addition to chaining to a trusted root.
	PinSHA256 []string
}

// poolTLSConfig builds the client TLS config for a pool at addr (host:port).
// It reads CAFile once: a file that cannot be read or holds no certificate is
// a configuration error at start, not a silent fall back to the system roots.
func poolTLSConfig(pool string, addr string, t PoolTLS) (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("pool %s: address %q: %w", pool, addr, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if t.ServerName != "" {
		cfg.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("pool %s: reading ca_file: %w", pool, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pool %s: ca_file %s holds no PEM certificate", pool, t.CAFile)
		}
		cfg.RootCAs = roots
	}
	if len(t.PinSHA256) > 0 {
		pins := make(map[string]bool, len(t.PinSHA256))
		for _, p := range t.PinSHA256 {
			norm, err := NormalizePin(p)
			if err != nil {
				return nil, fmt.Errorf("pool %s: tls_pin_sha256: %w", pool, err)
			}
			pins[norm] = true
		}
		// Runs after the normal chain and name verification succeeded.
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pool sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			der := sha256.Sum256(leaf.Raw)
			spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
			if pins[hex.EncodeToString(der[:])] || pins[hex.EncodeToString(spki[:])] {
				return nil
			}
			return fmt.Errorf("certificate of %s matches no tls_pin_sha256 (its certificate sha256 %x, its public key (SPKI) sha256 %x)",
				cs.ServerName, der, spki)
		}
	}
	return cfg, nil
}

// NormalizePin accepts a SHA-256 digest as 64 hex digits, with or without
// colons and in either case, and returns it as lower-case hex.
func NormalizePin(p string) (string, error) {
	s := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(p), ":", ""))
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("%q is not a SHA-256 digest (64 hex digits, colons allowed)", p)
	}
	return s, nil
}

// dialPool connects to a pool: plain TCP, or TLS with the handshake done
// before it returns, so a certificate problem is reported as one (and never
// followed by a plain-text attempt).
func dialPool(ctx context.Context, addr string, tlsCfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}
	if tlsCfg == nil {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		return conn, nil
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	conn := tls.Client(raw, tlsCfg)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("TLS handshake (no plain-text fallback): %w", err)
	}
	return conn, nil
}
