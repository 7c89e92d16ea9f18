package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSwitcherDefaults(t *testing.T) {
	s := Default().Switcher
	if s.Enabled || s.StateDir != "/var/lib/proxyd" || s.MaxParallel != 1 || s.FreePolls != 3 || s.FreeMemorySlackMiB != 256 ||
		s.Timeouts.StartAI.D() != 20*time.Minute || s.Timeouts.VerifyFree.D() != time.Minute || s.Docker.DeviceMode != "cdi" ||
		s.Docker.Host != "unix:///var/run/docker.sock" || s.Mining != nil || s.Workload != nil || len(s.Workloads()) != 0 {
		t.Errorf("defaults %+v", s)
	}
	if _, ok := s.MiningWorkload(); ok {
		t.Error("a mining workload by default")
	}
}

const vllm = `[switcher.workload.vllm]
runtime = "docker"
image = "vllm/vllm-openai:v0.6.3"
cmd = ["--model", "/models/llama", "--port", "{port}"]
readiness = "vllm"
port = 8000
port_per_gpu = true
power_limit_w = 300
`

const miner = `[switcher.mining]
runtime = "exec"
start_command = ["systemctl", "start", "miner@{gpu_index}"]
stop_command = ["systemctl", "stop", "miner@{gpu_index}"]
status_command = ["systemctl", "is-active", "--quiet", "miner@{gpu_index}"]
`

func TestSwitcherValidation(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // "" means valid
	}{
		{"defaults", "[switcher]\n", ""},
		{"enabled with workloads", "[switcher]\nenabled = true\n" + miner + vllm, ""},
		{"simulated", "[switcher.mining]\nruntime = \"simulated\"\nsim_memory_mib = 1024\nsim_never_ready = true\n", ""},
		{"timeouts", "[switcher.timeouts]\nstart_ai = \"30m\"\nverify_free = \"45s\"\n", ""},
		{"docker nvidia", "[switcher.docker]\nhost = \"tcp://127.0.0.1:2375\"\ndevice_mode = \"nvidia\"\n", ""},
		{"feed", "[switcher]\ndemand_url = \"https://demand.example.com/v1/contracts\"\ndemand_token_file = \"/etc/proxyd/demand-token\"\n", ""},
		{"relative state dir", "[switcher]\nstate_dir = \"state\"\n", `key "switcher.state_dir": "state" must be an absolute path`},
		{"max parallel 0", "[switcher]\nmax_parallel = 0\n", `"switcher.max_parallel": 0 is out of range`},
		{"free polls 0", "[switcher]\nfree_polls = 0\n", `"switcher.free_polls"`},
		{"feed not http", "[switcher]\ndemand_url = \"ftp://x/y\"\n", `"switcher.demand_url"`},
		{"token without feed", "[switcher]\ndemand_token_file = \"/x\"\n", `"switcher.demand_token_file": is set but demand_url is empty`},
		{"timeout zero", "[switcher.timeouts]\nstart_ai = \"0s\"\n", `line 2: key "switcher.timeouts.start_ai": "0s" is out of range`},
		{"bad device mode", "[switcher.docker]\ndevice_mode = \"gpu\"\n", `"switcher.docker.device_mode": "gpu" is not allowed`},
		{"bad docker host", "[switcher.docker]\nhost = \"/var/run/docker.sock\"\n", `"switcher.docker.host"`},
		{"unknown timeout", "[switcher.timeouts]\nstart_llm = \"1m\"\n", `unknown key "switcher.timeouts.start_llm"`},
		{"unknown workload key", vllm + "gpu_count = 2\n", `unknown key "switcher.workload.vllm.gpu_count"`},
		{"unknown mining key", miner + "restart = true\n", `unknown key "switcher.mining.restart"`},
		{"no runtime", "[switcher.workload.x]\nimage = \"y\"\n", `"switcher.workload.x.runtime": "" is not allowed`},
		{"docker without image", "[switcher.workload.x]\nruntime = \"docker\"\n", `"switcher.workload.x.image": a docker workload needs an image`},
		{"exec without commands", "[switcher.workload.x]\nruntime = \"exec\"\nstart_command = [\"a\"]\n",
			`"switcher.workload.x.stop_command": an exec workload needs stop_command`},
		{"key of another runtime", "[switcher.workload.x]\nruntime = \"exec\"\nimage = \"y\"\n" +
			"start_command = [\"a\"]\nstop_command = [\"b\"]\nstatus_command = [\"c\"]\n",
			`line 3: key "switcher.workload.x.image": belongs to runtime "docker", but this workload's runtime is "exec"`},
		{"sim key on docker", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nsim_load = 0.5\n", `"switcher.workload.x.sim_load": belongs to runtime "simulated"`},
		{"unknown placeholder", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\ncmd = [\"--gpu\", \"{gpu}\"]\n",
			`unknown placeholder {gpu}`},
		{"readiness needs a port", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nreadiness = \"triton\"\n",
			`"switcher.workload.x.port": readiness "triton" probes http://127.0.0.1:<port>/v2/health/ready`},
		{"bad readiness", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nreadiness = \"grpc\"\n", `"switcher.workload.x.readiness": "grpc" is not allowed`},
		{"path without probe", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nreadiness_path = \"/h\"\n", `use readiness = "http" to probe`},
		{"warmup openai", vllm + "warmup = \"openai\"\nwarmup_model = \"meta-llama/Llama-3.1-8B\"\n", ""},
		{"warmup openai without a model", vllm + "warmup = \"openai\"\nwarmup_timeout = \"30s\"\n", ""},
		{"warmup triton", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nreadiness = \"triton\"\nport = 8000\n" +
			"warmup = \"triton\"\nwarmup_model = \"resnet50\"\n", ""},
		{"warmup triton needs a model", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nreadiness = \"triton\"\nport = 8000\n" +
			"warmup = \"triton\"\n", `"switcher.workload.x.warmup_model": warmup "triton" asks GET /v2/models/<warmup_model>/ready`},
		{"bad warmup", vllm + "warmup = \"grpc\"\n", `"switcher.workload.vllm.warmup": "grpc" is not allowed`},
		{"warmup timeout too long", vllm + "warmup = \"openai\"\nwarmup_timeout = \"1m\"\n", `"switcher.workload.vllm.warmup_timeout": "1m0s" is out of range`},
		{"warmup model without warmup", vllm + "warmup_model = \"m\"\n", `"switcher.workload.vllm.warmup": is not set but warmup_model`},
		{"warmup model with a newline", vllm + "warmup = \"openai\"\nwarmup_model = \"a\\nb\"\n", `"switcher.workload.vllm.warmup_model": must be at most`},
		{"warmup needs a port", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nwarmup = \"openai\"\n",
			`"switcher.workload.x.port": warmup "openai" sends its request to http://127.0.0.1:<port>`},
		{"warmup on a simulated workload", "[switcher.workload.x]\nruntime = \"simulated\"\nport = 8000\nwarmup = \"openai\"\n",
			`"switcher.workload.x.warmup": sends a request to the workload's server`},
		{"proof of start none", "[switcher.workload.x]\nruntime = \"simulated\"\nproof_of_start = \"none\"\n", ""},
		{"bad proof of start", "[switcher.mining]\nruntime = \"simulated\"\nproof_of_start = \"pid\"\n",
			`"switcher.mining.proof_of_start": "pid" is not allowed; use one of "process", "none"`},
		{"bad workload name", "[switcher.workload.Big]\nruntime = \"simulated\"\n", `workload name "Big"`},
		{"reserved name", "[switcher.workload.mining]\nruntime = \"simulated\"\n", `reserved for [switcher.mining]`},
		{"power too high", "[switcher.mining]\nruntime = \"simulated\"\npower_limit_w = 5000\n", `"switcher.mining.power_limit_w": 5000 is out of range`},
		{"bad env", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nenv = [\"NOEQUALS\"]\n", `"NOEQUALS" is not NAME=value`},
		{"bad bind", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"y\"\nbinds = [\"models:/m\"]\n", `is not /host/path:/container/path`},
		{"pin too short", "[[contract]]\nid=\"c\"\ngpus=2\nworkload=\"w\"\nstart=2026-12-01T00:00:00Z\nend=2026-12-02T00:00:00Z\npin=[\"GPU-a\"]\n",
			`"contract[0].pin": pins 1 GPU(s) but the contract wants 2`},
		{"contract names an unknown workload", "[switcher]\nenabled = true\n" + miner + vllm +
			"[[contract]]\nid=\"c\"\ngpus=1\nworkload=\"llama\"\nstart=2026-12-01T00:00:00Z\nend=2026-12-02T00:00:00Z\n",
			`"contract[0].workload": names workload "llama", but no [switcher.workload.llama] is configured`},
		{"contract names a configured workload", "[switcher]\nenabled = true\n" + miner + vllm +
			"[[contract]]\nid=\"c\"\ngpus=1\nworkload=\"vllm\"\nstart=2026-12-01T00:00:00Z\nend=2026-12-02T00:00:00Z\n", ""},
		{"pin twice", "[[contract]]\nid=\"c\"\ngpus=1\nworkload=\"w\"\nstart=2026-12-01T00:00:00Z\nend=2026-12-02T00:00:00Z\npin=[\"GPU-a\", \"GPU-a\"]\n",
			`lists GPU GPU-a twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestSwitcherWorkloadDefaults(t *testing.T) {
	c, err := Parse([]byte(miner + vllm + "[switcher.workload.sim]\nruntime = \"simulated\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := c.Switcher.MiningWorkload()
	if !ok || m.Exec == nil || m.Exec.CommandTimeout.D() != 30*time.Second || m.StopTimeout.D() != 30*time.Second || m.Readiness != ReadinessRunning {
		t.Errorf("mining %+v", m)
	}
	ws := c.Switcher.Workloads()
	v := ws["vllm"]
	if v.Docker == nil || v.Docker.Network != "host" || v.ReadinessPath != "/health" || v.ReadinessStatus != 200 || v.PowerLimitW != 300 || v.Exec != nil {
		t.Errorf("vllm %+v", v)
	}
	if v.Warmup != "" || v.WarmupTimeout != 0 {
		t.Errorf("vllm has a warm-up by default: %+v", v)
	}
	s := ws["sim"]
	if s.Simulated == nil || s.Simulated.MemoryMiB != 8192 || s.Simulated.ReadyDelay.D() != 5*time.Second || s.Docker != nil {
		t.Errorf("sim %+v", s)
	}
	if !strings.Contains(c.Summary(), "switcher off") {
		t.Errorf("summary %q", c.Summary())
	}
	for _, preset := range []struct{ kind, path string }{{ReadinessVLLM, "/health"}, {ReadinessTGI, "/health"}, {ReadinessTriton, "/v2/health/ready"}} {
		if p, st, ok := ReadinessPreset(preset.kind); !ok || p != preset.path || st != 200 {
			t.Errorf("preset %s: %s %d %v", preset.kind, p, st, ok)
		}
	}
}

// The commented examples in configs/proxyd.toml, uncommented, are valid.
func TestExampleSwitcherBlocksAreValid(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "proxyd.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc []string
	in := false
	found := 0
	block := "" // the header of the current example block
	for _, line := range strings.Split(string(data), "\n") {
		body, commented := strings.CutPrefix(line, "# ")
		switch {
		case commented && block != "" && strings.HasPrefix(body, strings.TrimSuffix(block, "]")+"."):
			// A runtime sub-table belongs to the workload above it.
			in = true
			doc = append(doc, body)
		case commented && (strings.HasPrefix(body, "[switcher.") || strings.HasPrefix(body, "[[contract]]")):
			in = true
			found++
			block = body
			doc = append(doc, body)
		case in && commented && strings.Contains(body, " = "):
			doc = append(doc, body)
		default:
			in = false
		}
	}
	if found != 4 {
		t.Fatalf("found %d commented example blocks, want mining, a workload, kubernetes and a contract", found)
	}
	cfg, err := Parse([]byte(strings.Join(doc, "\n")))
	if err != nil {
		t.Fatalf("the commented examples do not validate: %v\n%s", err, strings.Join(doc, "\n"))
	}
	if k := cfg.Switcher.Kubernetes; k == nil || !k.Enabled || k.MinPriority == nil || *k.MinPriority != 1000 {
		t.Errorf("the [switcher.kubernetes] example decoded to %+v", k)
	}
	// The lending workload "kubernetes" comes with [switcher.kubernetes].
	if _, ok := cfg.Switcher.MiningWorkload(); !ok || len(cfg.Switcher.Workloads()) != 2 || len(cfg.Contracts) != 1 {
		t.Errorf("examples decoded to %+v", cfg.Switcher)
	}
}

func TestWarmupDefaults(t *testing.T) {
	c, err := Parse([]byte(vllm + "warmup = \"openai\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Switcher.Workloads()["vllm"]; w.Warmup != WarmupOpenAI || w.WarmupTimeout.D() != DefaultWarmupTimeout || w.WarmupModel != "" {
		t.Errorf("warm-up defaults %+v", w)
	}
}

// Contract retention and the contract bound: defaults, and out-of-range
// values refused (issue 12 #10).
func TestSwitcherContractBounds(t *testing.T) {
	s := Default().Switcher
	if s.ContractRetention.D() != 7*24*time.Hour || s.MaxContracts != 1000 {
		t.Errorf("contract_retention %s, max_contracts %d; want 168h and 1000", s.ContractRetention, s.MaxContracts)
	}
	tests := []struct{ toml, wantErr string }{
		{"[switcher]\ncontract_retention = \"24h\"\nmax_contracts = 50\n", ""},
		{"[switcher]\ncontract_retention = \"0s\"\n", `"switcher.contract_retention": "0s" is out of range`},
		{"[switcher]\ncontract_retention = \"9000h\"\n", `"switcher.contract_retention"`},
		{"[switcher]\nmax_contracts = 0\n", `"switcher.max_contracts": 0 is out of range`},
		{"[switcher]\nmax_contracts = 1000000\n", `"switcher.max_contracts"`},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.toml))
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%q: error %v, want %q", tc.toml, err, tc.wantErr)
		}
	}
}

// A demand_url with credentials is shown redacted in check-config's
// errors (issue 12 #4).
func TestDemandURLRedactedInErrors(t *testing.T) {
	for _, u := range []string{"ftp://feeduser:hunter2@demand.example.com/c?api_key=s3cretkey", "http://feeduser:hunter2@/c?api_key=s3cretkey"} {
		_, err := Parse([]byte("[switcher]\ndemand_url = \"" + u + "\"\n"))
		if err == nil {
			t.Fatalf("%s accepted", u)
		}
		if msg := err.Error(); strings.Contains(msg, "hunter2") || strings.Contains(msg, "s3cretkey") ||
			!strings.Contains(msg, "switcher.demand_url") || !strings.Contains(msg, "redacted") {
			t.Errorf("error shows a secret or lost the key: %s", msg)
		}
	}
}
