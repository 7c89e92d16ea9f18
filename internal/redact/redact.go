// Package redact strips secrets from values before they reach a log line,
// the events journal, an API answer or an error message.
//
// It owns one rule: a URL is shown as scheme://host:port/path, with any user
// information replaced by "redacted" and every query value replaced by
// "redacted" (the keys stay, so an operator can still see which parameters
// were set). It does not know which strings are URLs: callers pass the values
// they know to be URLs. It never returns the input unchanged when the input
// fails to parse as a URL but still looks like it carries credentials; such a
// value is replaced whole.
package redact

import (
	"net/url"
	"sort"
	"strings"
)

// Placeholder stands in for every removed secret.
const Placeholder = "redacted"

// URL returns raw with its user information and query values redacted and
// its fragment dropped. A value that does not parse as a URL is returned as
// "<unparseable URL redacted>" if it contains '@' or '?', since it may still
// carry a secret, and unchanged otherwise.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err == nil && u.Scheme == "" && u.User == nil && u.RawQuery == "" {
		return raw // not a URL at all: nothing to redact
	}
	if err != nil {
		if strings.ContainsAny(raw, "@?") {
			return "<unparseable URL redacted>"
		}
		return raw
	}
	if u.User == nil && u.RawQuery == "" && u.Fragment == "" && u.RawFragment == "" && !strings.ContainsAny(u.Opaque, "@?") {
		// Nothing to hide: keep it as written (re-encoding would turn a bare
		// "http://" in a message into "http:").
		return raw
	}
	if u.User != nil {
		u.User = url.User(Placeholder)
	}
	u.Fragment, u.RawFragment = "", ""
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = Placeholder + "=" + Placeholder
		} else {
			keys := make([]string, 0, len(q))
			for k := range q {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, 0, len(keys))
			for _, k := range keys {
				parts = append(parts, url.QueryEscape(k)+"="+Placeholder)
			}
			u.RawQuery = strings.Join(parts, "&")
		}
	}
	if u.Opaque != "" && strings.ContainsAny(u.Opaque, "@?") {
		u.Opaque = Placeholder
	}
	return u.String()
}

// String redacts every URL-shaped token (scheme://...) inside free text, such
// as an error message that quotes a URL, and leaves the rest of the text as
// it is. Tokens end at whitespace or a double quote.
func String(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			break
		}
		// Walk back to the start of the scheme.
		start := i
		for start > 0 && isSchemeByte(s[start-1]) {
			start--
		}
		end := i + 3
		for end < len(s) && !isTokenEnd(s[end]) {
			end++
		}
		b.WriteString(s[:start])
		if start == i { // "://" with no scheme: not a URL, keep it.
			b.WriteString(s[start:end])
		} else {
			b.WriteString(URL(s[start:end]))
		}
		s = s[end:]
	}
	return b.String()
}

func isSchemeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}

func isTokenEnd(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '"' || c == '\'' || c == '`'
}
