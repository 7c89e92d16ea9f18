package main

import (
	"strings"
	"testing"
)

func TestDebVersion(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "v1.2.3", want: "1.2.3"},
		{in: "1.2.3", want: "1.2.3"},
		{in: "v1.2.3-4-gabc1234", want: "1.2.3+git4.abc1234"},
		{in: "v1.2.3-4-gabc1234-dirty", want: "1.2.3+git4.abc1234+dirty"},
		{in: "abc1234", want: "0.0.0+gitabc1234"},
		{in: "abc1234-dirty", want: "0.0.0+gitabc1234+dirty"},
		{in: "dev", bad: true},
		{in: "", bad: true},
		{in: "1.0 beta", bad: true},
	}
	for _, tt := range tests {
		got, err := debVersion(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("debVersion(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("debVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestPackagedConfig(t *testing.T) {
	got, err := packagedConfig([]byte("[http]\napi_token_file = \"\"\npprof = false\n"))
	if err != nil || !strings.Contains(string(got), `api_token_file = "/etc/proxyd/api-token"`) {
		t.Fatalf("packagedConfig = %q, %v", got, err)
	}
	if _, err := packagedConfig([]byte("[http]\n")); err == nil {
		t.Fatal("a config without the token line must be refused, not packaged with the API off")
	}
}
