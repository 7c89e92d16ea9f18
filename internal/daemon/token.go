package daemon

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hashgate/proxyd/internal/config"
)

// tokenStore holds the SHA-256 of the API bearer token; comparing digests in
// constant time hides both content and length. A nil digest means the API is
// disabled (no api_token_file configured).
type tokenStore struct {
	digest atomic.Pointer[[32]byte]
}

// Token file bounds: a token is one line; a large file is the wrong file.
const (
	maxTokenFileBytes = 4096
	minTokenChars     = 16
)

// tokenRules checks a token file on behalf of the user proxyd runs as.
type tokenRules struct {
	// uid is that user; a token file must belong to it or to root, or
	// another account could replace the token.
	uid int
}

// read checks and reads a token file. "" means the API is disabled. The
// warnings are for a file that is safe enough to use but looser than it
// should be.
func (r tokenRules) read(path string) (*[32]byte, []config.Warning, error) {
	if path == "" {
		return nil, nil, nil
	}
	fail := func(format string, args ...any) (*[32]byte, []config.Warning, error) {
		return nil, nil, fmt.Errorf("http.api_token_file: "+format, args...)
	}
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return fail("%s does not exist; create it with: openssl rand -hex 32 | install -m 0640 -g proxyd /dev/stdin %s", path, path)
		}
		return fail("%w", err)
	}
	if !st.Mode().IsRegular() {
		return fail("%s is not a regular file", path)
	}
	perm := st.Mode().Perm()
	if perm&0o007 != 0 {
		return fail("%s has mode %04o and is readable or writable by every user; run chmod 0600 %s (or 0640 with group proxyd)",
			path, perm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != 0 && int(sys.Uid) != r.uid {
		return fail("%s belongs to %s, not to root or to the user proxyd runs as (%s): that account could replace the token; run chown root %s",
			path, userName(int(sys.Uid)), userName(r.uid), path)
	}
	if st.Size() > maxTokenFileBytes {
		return fail("%s is %d bytes; a token file holds one line", path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fail("%w", err)
	}
	tok, err := parseToken(b)
	if err != nil {
		return fail("%s %w", path, err)
	}
	var warns []config.Warning
	if perm&0o020 != 0 {
		warns = append(warns, config.Warning{Key: "http.api_token_file",
			Message: fmt.Sprintf("%s has mode %04o: its group can change the token; chmod g-w %s", path, perm, path)})
	}
	d := sha256.Sum256([]byte(tok))
	return &d, warns, nil
}

// parseToken takes a token file's contents: one line, the token, with or
// without a final newline (trailing empty lines are forgiven). A second line
// is refused rather than guessed at: which token works would otherwise
// depend on how the file was cut.
func parseToken(b []byte) (string, error) {
	content := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(b))
	content = strings.TrimRight(content, "\n")
	if n := strings.Count(content, "\n") + 1; n > 1 {
		return "", fmt.Errorf("holds %d lines; a token file holds exactly one line, the token", n)
	}
	tok := strings.TrimSpace(content)
	switch {
	case tok == "":
		return "", fmt.Errorf("is empty; put one token of at least %d characters in it (e.g. openssl rand -hex 32)", minTokenChars)
	case len(tok) < minTokenChars:
		return "", fmt.Errorf("holds a token of %d characters; use at least %d (e.g. openssl rand -hex 32)", len(tok), minTokenChars)
	}
	return tok, nil
}

// readTokenFile reads a token file with the rules for this process's user.
func readTokenFile(path string) (*[32]byte, error) {
	d, _, err := tokenRules{uid: os.Geteuid()}.read(path)
	return d, err
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("user %s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
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
