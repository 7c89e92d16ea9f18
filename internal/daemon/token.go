package daemon

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// tokenStore holds the SHA-256 of the API bearer token; comparing digests in
// constant time hides both content and length. A nil digest means the API is
// disabled (no api_token_file configured).
type tokenStore struct {
	digest atomic.Pointer[[32]byte]
}

// maxTokenFileBytes: a token is a line; a large file is the wrong file.
const maxTokenFileBytes = 4096

// readTokenFile reads a token file and refuses one that other users can read.
func readTokenFile(path string) (*[32]byte, error) {
	if path == "" {
		return nil, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("http.api_token_file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("http.api_token_file: %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("http.api_token_file: %s has mode %04o and is readable or writable by every user; run chmod 0600 %s (or 0640 with group proxyd)",
			path, st.Mode().Perm(), path)
	}
	if st.Size() > maxTokenFileBytes {
		return nil, fmt.Errorf("http.api_token_file: %s is %d bytes; a token file holds one line", path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("http.api_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return nil, fmt.Errorf("http.api_token_file: %s holds a token of %d characters; use at least 16 (e.g. openssl rand -hex 32)", path, len(tok))
	}
	d := sha256.Sum256([]byte(tok))
	return &d, nil
}

func (t *tokenStore) set(d *[32]byte) { t.digest.Store(d) }

// check reports whether the Authorization header carries the token.
func (t *tokenStore) check(header string) (ok bool, reason string) {
	want := t.digest.Load()
	if want == nil {
		return false, "the API is disabled: set [http] api_token_file to enable it"
	}
	const prefix = "Bearer "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return false, "missing bearer token: send Authorization: Bearer <token>"
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(header[len(prefix):])))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return false, "invalid bearer token"
	}
	return true, ""
}
