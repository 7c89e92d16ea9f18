package demo

import (
	"strings"
	"testing"
)

func TestSiteConfigParses(t *testing.T) {
	c := siteConfig{
		HTTPListen:      "127.0.0.1:0",
		TokenFile:       `/tmp/odd "dir"\with/api-token`,
		StratumListen:   "127.0.0.1:3333",
		PoolURL:         "stratum+tcp://127.0.0.1:4444",
		LogLevel:        "warn",
		Difficulty:      1e-5,
		SharesPerMin:    6,
		MinersPerSess:   256,
		ShutdownTimeout: "5s",
	}
	cfg, err := c.parse()
	if err != nil {
		t.Fatalf("%v\n%s", err, c.toml())
	}
	if cfg.HTTP.Listen != c.HTTPListen || cfg.HTTP.APITokenFile != c.TokenFile {
		t.Errorf("http = %+v", cfg.HTTP)
	}
	if len(cfg.Servers) != 1 || len(cfg.Pools) != 1 {
		t.Fatalf("%d servers, %d pools", len(cfg.Servers), len(cfg.Pools))
	}
	s, p := cfg.Servers[0], cfg.Pools[0]
	if s.Name != ServerName || s.Listen != c.StratumListen || s.InitialDifficulty != 1e-5 || s.MaxDifficulty != 1e-5 ||
		s.MinDifficulty >= s.MaxDifficulty || s.SharesPerMinute != 6 {
		t.Errorf("server = %+v", s)
	}
	if p.Name != PoolName || p.URL != c.PoolURL || p.MinersPerSession != 256 {
		t.Errorf("pool = %+v", p)
	}
	if cfg.GPU.Backend != "simulated" || cfg.Log.Level != "warn" || cfg.ShutdownTimeout.D().Seconds() != 5 {
		t.Errorf("gpu %q, log %q, shutdown %s", cfg.GPU.Backend, cfg.Log.Level, cfg.ShutdownTimeout)
	}
	if !strings.Contains(c.toml(), "SIMULATED") {
		t.Error("the generated config does not say what is simulated")
	}
}

func TestSiteConfigRejectsBadValues(t *testing.T) {
	c := siteConfig{HTTPListen: "nowhere", StratumListen: "127.0.0.1:0", PoolURL: "stratum+tcp://127.0.0.1:1",
		LogLevel: "loud", Difficulty: 1e-5, SharesPerMin: 6, MinersPerSess: 256, ShutdownTimeout: "5s"}
	_, err := c.parse()
	if err == nil || !strings.Contains(err.Error(), "generated config") || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("err = %v", err)
	}
}

func TestTOMLValues(t *testing.T) {
	for f, want := range map[float64]string{6: "6.0", 1e-5: "1e-05", 0.5: "0.5", 6.25e-7: "6.25e-07"} {
		if got := tomlFloat(f); got != want {
			t.Errorf("tomlFloat(%g) = %q, want %q", f, got, want)
		}
	}
	if got := tomlString(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("tomlString = %s", got)
	}
}
