package redact

import "testing"

func TestURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"https://feed.example.net/contracts", "https://feed.example.net/contracts"},
		{"https://user:hunter2@feed.example.net:8443/c", "https://redacted@feed.example.net:8443/c"},
		{"https://feed.example.net/c?api_key=s3cret&site=a", "https://feed.example.net/c?api_key=redacted&site=redacted"},
		{"https://feed.example.net/c#token=abc", "https://feed.example.net/c"},
		{"stratum+tcp://acct:pw@pool.example.com:3333", "stratum+tcp://redacted@pool.example.com:3333"},
		{"http://[::1]:80/x?k=%zz", "http://[::1]:80/x?redacted=redacted"},
		{"http://a b@host/%%", "<unparseable URL redacted>"},
		{"not a url", "not a url"},
		{"http://", "http://"},
		{"stratum+tcp://host:port", "stratum+tcp://host:port"},
	}
	for _, tt := range tests {
		if got := URL(tt.in); got != tt.want {
			t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"no url here", "no url here"},
		{`Get "https://u:p@h/x?token=t": dial tcp: refused`, `Get "https://redacted@h/x?token=redacted": dial tcp: refused`},
		{"two http://a:b@x and https://y/?k=v end", "two http://redacted@x and https://y/?k=redacted end"},
		{"odd :// alone", "odd :// alone"},
		{"is not an http:// or https:// URL", "is not an http:// or https:// URL"},
	}
	for _, tt := range tests {
		if got := String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"https://u:p@h/x?k=v", "a://", "://x", "x://y@z?%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		if out2 := String(out); out2 != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, out, out2)
		}
	})
}
