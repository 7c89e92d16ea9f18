package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigIsValid(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "configs", "proxyd.toml"))
	if err != nil {
		t.Fatalf("configs/proxyd.toml must pass check-config: %v", err)
	}
	if got := cfg.HTTP.Listen; got != "127.0.0.1:8080" {
		t.Errorf("http.listen = %q, want the documented default", got)
	}
	if len(cfg.Servers) != 1 || len(cfg.Pools) != 1 {
		t.Fatalf("example has %d servers and %d pools, want 1 and 1", len(cfg.Servers), len(cfg.Pools))
	}
	// The example documents the defaults: decoding it must equal applying them.
	def := Default()
	if cfg.ShutdownTimeout != def.ShutdownTimeout || cfg.Log != def.Log || cfg.GPU.Backend != def.GPU.Backend ||
		cfg.GPU.PollInterval != def.GPU.PollInterval || cfg.Switcher != def.Switcher {
		t.Errorf("example config and Default() disagree:\nexample %+v\ndefault %+v", cfg, def)
	}
	var s Server
	s.applyDefaults()
	got := cfg.Servers[0]
	got.Name, got.Listen, got.Pools = "", "", nil
	if got.Extranonce2Size != s.Extranonce2Size || got.InitialDifficulty != s.InitialDifficulty ||
		got.MaxLineBytes != s.MaxLineBytes || got.SubscribeTimeout != s.SubscribeTimeout ||
		got.IdleTimeout != s.IdleTimeout || got.NtimeWindow != s.NtimeWindow || got.MaxProtocolErrors != s.MaxProtocolErrors {
		t.Errorf("example [[server]] does not show the defaults:\nexample %+v\ndefault %+v", got, s)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // substrings that must all appear in the error
	}{
		{"unknown top-level key", "shutdown_timout = \"5s\"\n", []string{`unknown key "shutdown_timout"`, "line 1"}},
		{"unknown nested key", "[http]\nlisten = \"127.0.0.1:8080\"\nlistn = \"x\"\n", []string{`unknown key "http.listn"`, "line 3"}},
		{"unknown section", "[htttp]\nlisten = \"x\"\n", []string{`unknown key "htttp`}},
		{"unknown key in second array table", "[[pool]]\nname=\"a\"\nurl=\"stratum+tcp://h:1\"\nuser=\"u\"\n[[pool]]\nname=\"b\"\nurl=\"stratum+tcp://h:1\"\nuser=\"u\"\nwieght=3\n",
			[]string{`unknown key "pool.wieght"`, "line 9"}},
		{"port out of range", "[http]\nlisten = \"127.0.0.1:70000\"\n", []string{`"http.listen"`, "70000", "out of range", "1 to 65535", "line 2"}},
		{"port not a number", "[http]\nlisten = \"127.0.0.1:http\"\n", []string{`"http.listen"`, "not a number"}},
		{"listen without port", "[http]\nlisten = \"localhost\"\n", []string{`"http.listen"`, "host:port"}},
		{"bad duration", "shutdown_timeout = \"fast\"\n", []string{`"shutdown_timeout"`, `"fast" is not a duration`, `"5s"`, "line 1"}},
		{"duration as a number", "shutdown_timeout = 30\n", []string{"shutdown_timeout"}},
		{"negative duration", "shutdown_timeout = \"-1s\"\n", []string{`"shutdown_timeout"`, "positive"}},
		{"bad log level", "[log]\nlevel = \"verbose\"\n", []string{`"log.level"`, `"verbose"`, `"debug", "info", "warn", "error"`}},
		{"events journal too large", "[log]\nevents_file_mib = 1024\n", []string{`"log.events_file_mib"`, "0 to 256", "line 2"}},
		{"events journal negative", "[log]\nevents_file_mib = -1\n", []string{`"log.events_file_mib"`}},
		{"bad gpu backend", "[gpu]\nbackend = \"cuda\"\n", []string{`"gpu.backend"`, `"auto"`}},
		{"wrong type", "[http]\nlisten = 8080\n", []string{"http.listen", "line 2"}},
		{"syntax error", "[http\nlisten = \"x\"\n", []string{"line ", "table name"}},
		{"server extranonce2 too big", "[[server]]\nname=\"f\"\nlisten=\":3333\"\nextranonce2_size=9\n", []string{`"server[0].extranonce2_size"`, "2 to 8", "line 4"}},
		{"server names unknown pool", "[[server]]\nname=\"f\"\nlisten=\":3333\"\npools=[\"nope\"]\n", []string{`"server[0].pools"`, `"nope"`}},
		{"duplicate server names", "[[server]]\nname=\"f\"\nlisten=\":1\"\n[[server]]\nname=\"f\"\nlisten=\":2\"\n", []string{`"server[1].name"`, "duplicate"}},
		{"pool http url refused", "[[pool]]\nname=\"p\"\nurl=\"http://h:443\"\nuser=\"u\"\n", []string{`"pool[0].url"`, "http", "not supported"}},
		{"miners_per_session zero", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\nminers_per_session = 0\n", []string{`"pool.miners_per_session"`, "0 is out of range", `"auto"`, "line 5"}},
		{"miners_per_session negative", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\nminers_per_session = -256\n", []string{`"pool.miners_per_session"`, "-256"}},
		{"miners_per_session too large", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\nminers_per_session = 16777217\n", []string{`"pool.miners_per_session"`, "1 to 16777216"}},
		{"miners_per_session a word", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\nminers_per_session = \"max\"\n", []string{`"pool.miners_per_session"`, `"max" is not allowed`, `"auto"`}},
		{"miners_per_session a float", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\nminers_per_session = 256.0\n", []string{`"pool.miners_per_session"`, "whole number"}},
		{"min miner extranonce2 too big", "[[server]]\nname=\"f\"\nlisten=\":3333\"\nmin_miner_extranonce2_size=9\n", []string{`"server[0].min_miner_extranonce2_size"`, "1 to 8", "line 4"}},
		{"pool without user", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\n", []string{`"pool[0].user"`}},
		{"pool bad identity", "[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:3333\"\nuser=\"u\"\nidentity=\"each\"\n", []string{`"pool[0].identity"`, `"passthrough"`}},
		{"contract end before start", "[[contract]]\nid=\"c\"\ngpus=1\nworkload=\"w\"\nstart=2026-12-02T00:00:00Z\nend=2026-12-01T00:00:00Z\n", []string{`"contract[0].end"`, "after start"}},
		{"several problems at once", "[http]\nlisten=\":99999\"\nbogus=1\n[log]\nformat=\"xml\"\n", []string{`unknown key "http.bogus"`, `"log.format"`, `"http.listen"`}},
		{"binary data", "\x00\x01\x02\xff\xfe", []string{"binary"}},
		{"not utf-8", "\xff\xfe[http]\n", []string{"UTF-8"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml))
			if err == nil {
				t.Fatalf("Parse accepted invalid config:\n%s", tc.toml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		toml  string
		check func(t *testing.T, c *Config)
	}{
		{"empty file gives defaults", "", func(t *testing.T, c *Config) {
			if c.ShutdownTimeout.D() != 30*time.Second || c.HTTP.Listen != "127.0.0.1:8080" || c.Log.Level != "info" {
				t.Errorf("defaults not applied: %+v", c)
			}
		}},
		{"only comments", "# nothing here\n\n", func(t *testing.T, c *Config) {}},
		{"durations", "shutdown_timeout = \"1m30s\"\n[gpu]\npoll_interval=\"250ms\"\n", func(t *testing.T, c *Config) {
			if c.ShutdownTimeout.D() != 90*time.Second || c.GPU.PollInterval.D() != 250*time.Millisecond {
				t.Errorf("got %v and %v", c.ShutdownTimeout, c.GPU.PollInterval)
			}
		}},
		{"server defaults applied", "[[server]]\nname=\"f\"\nlisten=\":3333\"\n[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:1\"\nuser=\"u\"\n", func(t *testing.T, c *Config) {
			s := c.Servers[0]
			if s.Extranonce2Size != 4 || s.MinMinerExtranonce2Size != 4 || s.MaxLineBytes != 16384 || s.SharesPerMinute != 12 || s.MinDifficulty != 256 {
				t.Errorf("server defaults not applied: %+v", s)
			}
		}},
		{"miners_per_session auto by default, explicit kept", "[[pool]]\nname=\"a\"\nurl=\"stratum+tcp://h:1\"\nuser=\"u\"\n" +
			"[[pool]]\nname=\"b\"\nurl=\"stratum+tcp://h:1\"\nuser=\"u\"\nminers_per_session=\"auto\"\n" +
			"[[pool]]\nname=\"c\"\nurl=\"stratum+tcp://h:1\"\nuser=\"u\"\nminers_per_session=256\n", func(t *testing.T, c *Config) {
			a, b, x := c.Pools[0].MinersPerSession, c.Pools[1].MinersPerSession, c.Pools[2].MinersPerSession
			if !a.IsAuto() || a.Limit() != 0 || !b.IsAuto() || x.IsAuto() || x.Limit() != 256 || x != 256 || a.String() != "auto" || x.String() != "256" {
				t.Errorf("miners_per_session: %v %v %v", a, b, x)
			}
		}},
		{"contract dates", "[[contract]]\nid=\"c\"\ngpus=2\nworkload=\"w\"\nstart=2026-12-01T00:00:00Z\nend=2026-12-02T00:00:00Z\nlead_time=\"10m\"\n", func(t *testing.T, c *Config) {
			if c.Contracts[0].End.Sub(c.Contracts[0].Start) != 24*time.Hour || c.Contracts[0].LeadTime.D() != 10*time.Minute {
				t.Errorf("contract = %+v", c.Contracts[0])
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.toml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestLoadFileProblems(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte(strings.Repeat("# x\n", maxFileBytes/4+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin.toml")
	if err := os.WriteFile(bin, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.toml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.toml"), "no such file"},
		{"directory", dir, "is a directory"},
		{"too big", big, "larger than"},
		{"binary", bin, "binary"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load(%s) error = %v, want it to mention %q", tc.path, err, tc.want)
			}
			if !strings.Contains(err.Error(), "config") {
				t.Errorf("error %q should say it is about the config", err)
			}
		})
	}
	c, err := Load(empty)
	if err != nil {
		t.Fatalf("empty file: %v", err)
	}
	if c.Path != empty {
		t.Errorf("Path = %q, want %q", c.Path, empty)
	}
}

func TestParsePoolURL(t *testing.T) {
	tests := []struct {
		in, addr string
		ok       bool
	}{
		{"stratum+tcp://pool.example.com:3333", "pool.example.com:3333", true},
		{"tcp://10.0.0.1:3333", "10.0.0.1:3333", true},
		{"stratum+tcp://[::1]:3333", "[::1]:3333", true},
		{"stratum+tcp://pool.example.com", "", false},
		{"stratum+tcp://:3333", "", false},
		{"stratum+tcp://h:0", "", false},
		{"stratum+tcp://h:99999", "", false},
		{"http://h:80", "", false},
		{"", "", false},
		{"::", "", false},
	}
	for _, tc := range tests {
		addr, _, err := ParsePoolURL(tc.in)
		if (err == nil) != tc.ok || addr != tc.addr {
			t.Errorf("ParsePoolURL(%q) = %q, %v; want %q ok=%v", tc.in, addr, err, tc.addr, tc.ok)
		}
	}
}

// FuzzParse: the config is outside input (an operator's file); no input may
// panic, and anything accepted must validate again identically.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "..", "configs", "proxyd.toml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("[http]\nlisten = \"127.0.0.1:70000\"\n"))
	f.Add([]byte("[[server]]\nname=\"f\"\nlisten=\":3333\"\n[[pool]]\nname=\"p\"\nurl=\"stratum+tcp://h:1\"\nuser=\"u\"\n"))
	// A workload in the sub-table shape and one in the deprecated flat shape.
	f.Add([]byte("[switcher.workload.x]\nruntime=\"docker\"\n[switcher.workload.x.docker]\nimage=\"i\"\n"))
	f.Add([]byte("[switcher.mining]\nruntime=\"simulated\"\nsim_load=0.5\n[switcher.mining.simulated]\nload=0.6\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if c.HTTP.Listen == "" || c.ShutdownTimeout <= 0 {
			t.Fatalf("accepted config violates validation: %+v", c)
		}
	})
}

// TLS pools: accepted with stratum+ssl/stratum+tls; their keys are refused
// on a plain pool, a CA file must be readable PEM, a pin a SHA-256 digest.
func TestPoolTLSKeys(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	pin := strings.Repeat("a1", 32)
	base := "[[server]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"p\"\nuser = \"acct\"\n"
	tests := []struct{ pool, wantErr string }{
		{`url = "stratum+ssl://pool.example.net:443"`, ""},
		{`url = "stratum+tls://pool.example.net:443"` + "\ntls_pin_sha256 = [\"" + pin + "\"]\ntls_server_name = \"pool.example.net\"", ""},
		{`url = "stratum+tcp://pool.example.net:3333"` + "\nca_file = \"/x.pem\"", `"pool[0].ca_file": applies only to a TLS pool`},
		{`url = "stratum+tcp://pool.example.net:3333"` + "\ntls_pin_sha256 = [\"" + pin + "\"]", `"pool[0].tls_pin_sha256": applies only to a TLS pool`},
		{`url = "stratum+ssl://pool.example.net:443"` + "\ntls_pin_sha256 = [\"abc\"]", `is not a SHA-256 digest`},
		{`url = "stratum+ssl://pool.example.net:443"` + "\nca_file = \"" + filepath.Join(dir, "missing.pem") + "\"", `"pool[0].ca_file": cannot be read`},
		{`url = "stratum+ssl://pool.example.net:443"` + "\nca_file = \"" + notPEM + "\"", `holds no PEM certificate`},
		{`url = "http://pool.example.net:443"`, `scheme "http"`},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(base + tc.pool + "\n"))
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: error %v, want %q", tc.pool, err, tc.wantErr)
		}
	}
}
