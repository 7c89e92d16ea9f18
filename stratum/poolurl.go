package stratum

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// ParsePoolURL checks a stratum+tcp://host:port (or TLS: stratum+ssl://,
// stratum+tls://) URL and returns host:port and the scheme. Nothing is ever
// spoken in plain text to a pool configured for TLS. The errors are written
// to follow a config key ("pool[0].url: ...").
func ParsePoolURL(raw string) (addr string, scheme string, err error) {
	if raw == "" {
		return "", "", fmt.Errorf("must not be empty; write stratum+tcp://host:port or stratum+ssl://host:port")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	switch u.Scheme {
	case "stratum+tcp", "tcp", "stratum+ssl", "stratum+tls":
	default:
		return "", "", fmt.Errorf("scheme %q in %q is not supported; use stratum+tcp://host:port or stratum+ssl://host:port", u.Scheme, raw)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return "", "", fmt.Errorf("%q needs host:port after the scheme", raw)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("port %q in %q is out of range (allowed 1 to 65535)", port, raw)
	}
	return u.Host, u.Scheme, nil
}

// IsTLSScheme reports whether a pool URL's scheme (from ParsePoolURL) means TLS.
func IsTLSScheme(scheme string) bool { return scheme == "stratum+ssl" || scheme == "stratum+tls" }
