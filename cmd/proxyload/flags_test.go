package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	proxydconfig "github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/stratum/stratumtest"
)

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	_, err := parseFlags([]string{"--help"}, &out, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	help := out.String()
	var c config
	newFlagSet(&c).VisitAll(func(f *flag.Flag) {
		if f.Usage == "" {
			t.Errorf("flag --%s has no usage text", f.Name)
		}
		if !strings.Contains(help, "\n  --"+f.Name+" ") && !strings.Contains(help, "\n  --"+f.Name+"\n") {
			t.Errorf("--help does not list --%s", f.Name)
		}
	})
	for _, want := range []string{"HASHING", "d·2^32", "FILE DESCRIPTORS", "CAP_SYS_RESOURCE", "--compare", "added", "Unaccounted", "exit 1", "130"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
	if code := realMain([]string{"--help"}, io.Discard, io.Discard); code != exitOK {
		t.Fatalf("--help exit %d", code)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		errHas string
		check  func(*testing.T, config)
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			if c.Target != targetDirect || c.Miners != 1000 || c.Procs != -1 || c.Difficulty != 1e-7 || len(c.Styles) != 4 || len(c.BadKinds) != 3 {
				t.Fatalf("%+v", c)
			}
			if ps := c.paths(); len(ps) != 1 || ps[0].Name != "direct" {
				t.Fatalf("paths %+v", ps)
			}
		}},
		{name: "compare with target", args: []string{"--compare", "--target", "127.0.0.1:3333", "--procs", "3"}, check: func(t *testing.T, c config) {
			ps := c.paths()
			if len(ps) != 2 || ps[0].Name != "direct" || ps[1].Name != "proxied" || ps[1].Spawn != "" || ps[1].Target != "127.0.0.1:3333" || c.Procs != 3 {
				t.Fatalf("paths %+v procs %d", ps, c.Procs)
			}
		}},
		{name: "spawn", args: []string{"--spawn-proxyd", "bin/proxyd"}, check: func(t *testing.T, c config) {
			ps := c.paths()
			if len(ps) != 1 || ps[0].Spawn != "bin/proxyd" || !ps[0].Proxied {
				t.Fatalf("paths %+v", ps)
			}
		}},
		{name: "procs auto and zero", args: []string{"--procs", "0"}, check: func(t *testing.T, c config) {
			if c.Procs != 0 {
				t.Fatalf("procs %d", c.Procs)
			}
		}},
		{name: "proxy B alternates with A over rounds", args: []string{"--spawn-proxyd", "bin/proxyd", "--compare-target", "127.0.0.1:3335",
			"--compare-proxy-pid", "77", "--rounds", "2", "--names", "proxyd,ckpool", "--compare-pool-listen", "127.0.0.1:3336"}, check: func(t *testing.T, c config) {
			ps := c.paths()
			want := []pathSpec{
				{Name: "proxyd", Proxied: true, Spawn: "bin/proxyd", Round: 1},
				{Name: "ckpool", Proxied: true, Target: "127.0.0.1:3335", PID: 77, Pool: 1, Round: 1},
				{Name: "proxyd", Proxied: true, Spawn: "bin/proxyd", Round: 2},
				{Name: "ckpool", Proxied: true, Target: "127.0.0.1:3335", PID: 77, Pool: 1, Round: 2},
			}
			if len(ps) != len(want) {
				t.Fatalf("paths %+v", ps)
			}
			for i := range want {
				if ps[i] != want[i] {
					t.Fatalf("path %d = %+v, want %+v", i, ps[i], want[i])
				}
			}
			if ps[3].label() != "ckpool#2" || c.params(c.Miners, ps).Paths[1] != "ckpool#1" {
				t.Fatalf("labels %q %v", ps[3].label(), c.params(c.Miners, ps).Paths)
			}
		}},
		{name: "proxy B spawned, A external", args: []string{"--target", "127.0.0.1:3333", "--proxy-pid", "5", "--compare-spawn-proxyd", "old/proxyd"}, check: func(t *testing.T, c config) {
			ps := c.paths()
			if len(ps) != 2 || ps[0] != (pathSpec{Name: "A", Proxied: true, Target: "127.0.0.1:3333", PID: 5, Round: 1}) ||
				ps[1] != (pathSpec{Name: "B", Proxied: true, Spawn: "old/proxyd", Pool: 1, Round: 1}) {
				t.Fatalf("paths %+v", ps)
			}
		}},
		{name: "proxy B without A", args: []string{"--compare-target", "127.0.0.1:3335"}, errHas: "add --target"},
		{name: "proxy B both ways", args: []string{"--target", "127.0.0.1:3333", "--compare-target", "127.0.0.1:3335", "--compare-spawn-proxyd", "x"}, errHas: "not both"},
		{name: "proxy B with --compare", args: []string{"--compare", "--target", "127.0.0.1:3333", "--compare-target", "127.0.0.1:3335"}, errHas: "drop --compare"},
		{name: "proxy B is A", args: []string{"--target", "127.0.0.1:3333", "--compare-target", "127.0.0.1:3333"}, errHas: "another proxy"},
		{name: "proxy B bad address", args: []string{"--target", "127.0.0.1:3333", "--compare-target", "nowhere"}, errHas: "--compare-target"},
		{name: "one pool for both", args: []string{"--target", "127.0.0.1:3333", "--compare-target", "127.0.0.1:3335",
			"--pool-listen", "127.0.0.1:3334", "--compare-pool-listen", "127.0.0.1:3334"}, errHas: "its own pool"},
		{name: "B's pid with B spawned", args: []string{"--target", "127.0.0.1:3333", "--compare-spawn-proxyd", "x", "--compare-proxy-pid", "3"}, errHas: "--compare-proxy-pid"},
		{name: "B's pid without B", args: []string{"--target", "127.0.0.1:3333", "--compare-proxy-pid", "3"}, errHas: "proxy B's"},
		{name: "rounds without B", args: []string{"--target", "127.0.0.1:3333", "--rounds", "3"}, errHas: "--rounds"},
		{name: "zero rounds", args: []string{"--target", "127.0.0.1:3333", "--compare-target", "127.0.0.1:3335", "--rounds", "0"}, errHas: "--rounds"},
		{name: "one name", args: []string{"--names", "proxyd"}, errHas: "two names"},
		{name: "same names", args: []string{"--names", "x,x"}, errHas: "must differ"},
		{name: "name direct", args: []string{"--names", "direct,x"}, errHas: "direct"},
		{name: "compare alone", args: []string{"--compare"}, errHas: "--compare needs"},
		{name: "spawn and target", args: []string{"--spawn-proxyd", "x", "--target", "127.0.0.1:1"}, errHas: "leave --target"},
		{name: "bad target", args: []string{"--target", "nowhere"}, errHas: "--target"},
		{name: "target port 0", args: []string{"--target", "127.0.0.1:0"}, errHas: "--target"},
		{name: "no miners", args: []string{"--miners", "0"}, errHas: "--miners"},
		{name: "difficulty too high", args: []string{"--difficulty", "0.01"}, errHas: "--difficulty"},
		{name: "pool difficulty factor below 1", args: []string{"--pool-difficulty-factor", "0.5"}, errHas: "--pool-difficulty-factor"},
		{name: "pool job interval too short", args: []string{"--pool-job-interval", "1ms"}, errHas: "--pool-job-interval"},
		{name: "negative subscribe delay", args: []string{"--pool-subscribe-delay", "-1s"}, errHas: "--pool-subscribe-delay"},
		{name: "negative rate", args: []string{"--rate", "-1"}, errHas: "--rate"},
		{name: "bad fraction", args: []string{"--bad", "1"}, errHas: "--bad"},
		{name: "unknown style", args: []string{"--styles", "antminer,cgminer"}, errHas: "unknown style"},
		{name: "unknown kind", args: []string{"--bad-kinds", "stale,weird"}, errHas: "unknown kind"},
		{name: "fd policy", args: []string{"--fd-policy", "maybe"}, errHas: "--fd-policy"},
		{name: "procs garbage", args: []string{"--procs", "many"}, errHas: "auto or a number"},
		{name: "stray argument", args: []string{"extra"}, errHas: "unexpected argument"},
		{name: "unknown flag", args: []string{"--nope"}, errHas: "not defined"},
		{name: "print-config without target", args: []string{"--print-config"}, errHas: "--print-config"},
		{name: "print-config with a random pool port", args: []string{"--print-config", "--target", "127.0.0.1:3333"}, errHas: "fixed port"},
		{name: "proxy-pid with spawn", args: []string{"--spawn-proxyd", "x", "--proxy-pid", "9"}, errHas: "--proxy-pid"},
		{name: "miners per session zero", args: []string{"--miners-per-session", "0"}, errHas: "--miners-per-session"},
		{name: "miners per session word", args: []string{"--miners-per-session", "many"}, errHas: "--miners-per-session"},
		{name: "zero duration", args: []string{"--duration", "0s"}, errHas: "--duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard, io.Discard)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want one containing %q", err, tc.errHas)
				}
				if code := realMain(tc.args, io.Discard, io.Discard); code != exitUsage {
					t.Fatalf("exit %d, want %d", code, exitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseStyles(t *testing.T) {
	A, W, B, X := stratumtest.StyleAntminer, stratumtest.StyleWhatsminer, stratumtest.StyleBraiinsOS, stratumtest.StyleBitaxe
	tests := []struct {
		text string
		want []stratumtest.Style
	}{
		{"antminer", []stratumtest.Style{A}},
		{defaultStyles, []stratumtest.Style{A, W, B, X}},
		{" Antminer , bitaxe ", []stratumtest.Style{A, X}},
		{"antminer=3,whatsminer", []stratumtest.Style{A, A, W, A}},
		{"antminer=2,whatsminer=2", []stratumtest.Style{A, W, A, W}},
	}
	for _, tc := range tests {
		got, err := parseStyles(tc.text)
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%q: %v, want %v", tc.text, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("%q: %v, want %v", tc.text, got, tc.want)
			}
		}
	}
	for _, bad := range []string{"", ",", "antminer=0", "antminer=x", "idle"} {
		if _, err := parseStyles(bad); err == nil {
			t.Errorf("parseStyles(%q) accepted", bad)
		}
	}
	kinds, err := parseBadKinds("low-difficulty, STALE,duplicate,bad-version-bits,unauthorized-worker,bad-extranonce2")
	if err != nil || len(kinds) != 6 || kinds[1] != stratumtest.ShareStale {
		t.Fatalf("kinds %v, %v", kinds, err)
	}
	if _, err := parseBadKinds("good"); err == nil {
		t.Fatal("good accepted as a bad kind")
	}
}

func TestProxydConfigLoads(t *testing.T) {
	for i, d := range []float64{1e-7, 1e-9, 0.5, 1, 8192} {
		sizes := []string{"128", "auto", "", "128", "128"}
		c := config{Difficulty: d, Rate: 12, Miners: 10000, MinersPerSession: sizes[i]}
		text := proxydConfig(c.proxydParams("127.0.0.1:3333", "stratum+tcp://127.0.0.1:3334", "127.0.0.1:8081"))
		cfg, err := proxydconfig.Parse([]byte(text))
		if err != nil {
			t.Fatalf("difficulty %g: generated config does not load: %v\n%s", d, err, text)
		}
		s, p := cfg.Servers[0], cfg.Pools[0]
		if s.Listen != "127.0.0.1:3333" || s.InitialDifficulty != d || s.MinDifficulty != d || s.MaxDifficulty != d ||
			s.MaxConnectionsPerIP != 0 || s.MaxConnections < 10000 || p.URL != "stratum+tcp://127.0.0.1:3334" ||
			p.MinersPerSession.String() != map[string]string{"128": "128", "auto": "auto", "": "auto"}[sizes[i]] || cfg.GPU.Backend != "off" || cfg.HTTP.Listen != "127.0.0.1:8081" {
			t.Fatalf("difficulty %g: loaded %+v %+v", d, s, p)
		}
	}
}

func TestPrintConfig(t *testing.T) {
	var out bytes.Buffer
	code := realMain([]string{"--print-config", "--target", "127.0.0.1:3333", "--pool-listen", "127.0.0.1:3334"}, &out, io.Discard)
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if _, err := proxydconfig.Parse(out.Bytes()); err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `url = "stratum+tcp://127.0.0.1:3334"`) {
		t.Fatalf("pool url missing:\n%s", out.String())
	}
}

func TestTomlFloat(t *testing.T) {
	for f, want := range map[float64]string{1e-7: "1e-07", 1: "1.0", 8192: "8192.0", 0.5: "0.5", 1e21: "1e+21"} {
		if got := tomlFloat(f); got != want {
			t.Errorf("tomlFloat(%v) = %q, want %q", f, got, want)
		}
	}
}
