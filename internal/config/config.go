// Package config loads and validates proxyd's one TOML file.
//
// Decoding is strict: a key the schema does not know is an error that names the
// key and, where the file shows it, the line. Every value is validated after
// decoding with a message that says what is wrong and what is allowed, so that
// `proxyd check-config` is the only tool an operator needs before a restart.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/hashgate/proxyd/internal/redact"
)

// DefaultPath is where the systemd unit and `proxyd run` look for the config.
const DefaultPath = "/etc/proxyd/proxyd.toml"

// maxFileBytes bounds what Load reads: a config is a few KiB; anything near
// this size is the wrong file.
const maxFileBytes = 4 << 20

// Config is the whole of proxyd's configuration. The zero value is not useful:
// use Default, Load or Parse.
type Config struct {
	// ShutdownTimeout bounds how long components may drain after SIGTERM.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	Log       Log        `toml:"log"`
	HTTP      HTTP       `toml:"http"`
	Servers   []Server   `toml:"server"`
	Pools     []Pool     `toml:"pool"`
	GPU       GPU        `toml:"gpu"`
	Switcher  Switcher   `toml:"switcher"`
	Contracts []Contract `toml:"contract"`

	// Path is the file this config was read from ("" when parsed from memory).
	Path string `toml:"-"`

	// deprecations are the deprecated keys the file uses; Warnings lists
	// them first.
	deprecations []Warning
}

// Default returns the configuration used for every key a file leaves out.
func Default() *Config {
	return &Config{
		ShutdownTimeout: Duration(30 * time.Second),
		Log:             defaultLog(),
		HTTP:            defaultHTTP(),
		GPU:             defaultGPU(),
		Switcher:        defaultSwitcher(),
	}
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("config: %s is a directory, not a TOML file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("config: %s is larger than %d bytes; is this the right file?", path, maxFileBytes)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Path = path
	return cfg, nil
}

// Parse decodes and validates a TOML document held in memory.
func Parse(data []byte) (*Config, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("file is not UTF-8 text (is it a binary file?)")
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, errors.New("file contains NUL bytes (is it a binary file?)")
	}
	cfg := Default()
	src := string(data)
	md, err := toml.Decode(src, cfg)
	if err != nil {
		// The decoder may quote what it choked on; that may be a URL.
		return nil, errors.New(redact.String(decodeError(err).Error()))
	}
	v := &validator{src: src, legacy: map[string]string{}, subtables: map[string]bool{}}
	legacy, err := migrateLegacy(src, md, cfg, v)
	if err != nil {
		return nil, errors.New(redact.String(err.Error()))
	}
	for _, p := range cfg.Pools {
		v.secretURL(p.URL)
	}
	v.secretURL(cfg.Switcher.DemandURL)
	v.secretURL(cfg.Switcher.Docker.Host)
	// Unknown keys and bad values are reported together, so one run of
	// check-config shows every problem in the file.
	for _, k := range md.Undecoded() {
		if !legacy(k) {
			v.errs = append(v.errs, unknownKey(src, k))
		}
	}
	cfg.validate(v)
	if err := v.err(); err != nil {
		return nil, err
	}
	cfg.deprecations = v.warns
	return cfg, nil
}

// decodeError turns the decoder's error into "line N: key K: what".
func decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			return fmt.Errorf("line %d: key %q: %s", pe.Position.Line, pe.LastKey, msg)
		}
		return fmt.Errorf("line %d: %s", pe.Position.Line, msg)
	}
	return fmt.Errorf("%w", err)
}

func unknownKey(src string, k toml.Key) string {
	if line := locateKey(src, k); line > 0 {
		return fmt.Sprintf("line %d: unknown key %q", line, k.String())
	}
	return fmt.Sprintf("unknown key %q", k.String())
}

// Summary is the one line `check-config` prints on success.
func (c *Config) Summary() string {
	return fmt.Sprintf("config ok: %d server(s), %d pool(s), gpu backend %q, switcher %s, %d contract(s), http %s",
		len(c.Servers), len(c.Pools), c.GPU.Backend, onOff(c.Switcher.Enabled), len(c.Contracts), c.HTTP.Listen)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (c *Config) validate(v *validator) {
	v.positiveDuration("shutdown_timeout", c.ShutdownTimeout)
	c.Log.validate(v)
	c.HTTP.validate(v)
	validateServers(v, c.Servers, c.Pools)
	validatePools(v, c.Pools)
	c.GPU.validate(v)
	c.Switcher.validate(v)
	validateContracts(v, c.Contracts)
	c.validateContractWorkloads(v)
	c.validateAcrossSections(v)
}

// validateAcrossSections holds the rules that tie sections together and that
// the components would otherwise enforce only at start: `proxyd run` would
// exit 78 where check-config said "config ok".
func (c *Config) validateAcrossSections(v *validator) {
	if len(c.Servers) > 0 && len(c.Pools) == 0 {
		v.addf("server", "%d [[server]] table(s) but no [[pool]]: miners would have nowhere to hash; add a [[pool]] or remove the [[server]]", len(c.Servers))
	}
	if !c.Switcher.Enabled || c.GPU.Backend == "simulated" {
		return
	}
	if m, ok := c.Switcher.MiningWorkload(); ok && m.Runtime == RuntimeSimulated {
		v.addf("switcher.mining.runtime", "is \"simulated\", which runs on simulated GPUs only, but [gpu] backend is %q: set backend = \"simulated\" or use runtime docker or exec", c.GPU.Backend)
	}
	ws := c.Switcher.Workloads()
	names := make([]string, 0, len(ws))
	for name := range ws {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if ws[name].Runtime == RuntimeSimulated {
			v.addf("switcher.workload."+name+".runtime", "is \"simulated\", which runs on simulated GPUs only, but [gpu] backend is %q: set backend = \"simulated\" or use runtime docker or exec", c.GPU.Backend)
		}
	}
}

// validateContractWorkloads checks, when the switcher is on, that every
// [[contract]] names a configured [switcher.workload.<name>]: otherwise the
// switcher would refuse to start, and check-config should say so first.
func (c *Config) validateContractWorkloads(v *validator) {
	if !c.Switcher.Enabled {
		return
	}
	known := c.Switcher.Workloads()
	for i, ct := range c.Contracts {
		if _, ok := known[ct.Workload]; ct.Workload != "" && !ok {
			v.addf(fmt.Sprintf("contract[%d].workload", i), "names workload %q, but no [switcher.workload.%s] is configured", ct.Workload, ct.Workload)
		}
	}
}
