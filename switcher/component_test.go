package switcher

import (
	"bytes"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/hashgate/proxyd/internal/config"
)

// DemoConfig is what an operator could write: it passes the config's own
// validation.
func TestDemoConfigIsValid(t *testing.T) {
	var buf bytes.Buffer
	doc := struct {
		GPU      config.GPU      `toml:"gpu"`
		Switcher config.Switcher `toml:"switcher"`
	}{config.Default().GPU, DemoConfig("/var/lib/proxyd-demo")}
	doc.GPU.Backend = "simulated"
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(buf.Bytes())
	if err != nil {
		t.Fatalf("DemoConfig does not validate: %v\n%s", err, buf.String())
	}
	if !cfg.Switcher.Enabled || cfg.Switcher.Workloads()[DemoWorkload].PowerLimitW != 300 {
		t.Errorf("decoded %+v", cfg.Switcher)
	}
}
