package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// The same workloads in the sub-table shape and in the flat shape of
// earlier versions decode to the same config; only the flat one warns,
// once per flat key, naming the key and its new place.
func TestWorkloadShapes(t *testing.T) {
	const sub = `[switcher.mining]
runtime = "exec"
[switcher.mining.exec]
start_command = ["start", "{gpu_index}"]
stop_command = ["stop"]
status_command = ["status"]
command_timeout = "5s"

[switcher.workload.vllm]
runtime = "docker"
port = 8000
[switcher.workload.vllm.docker]
image = "vllm/vllm-openai:v0.6.3"
cmd = ["--port", "{port}"]
network = "bridge"

[switcher.workload.sim]
runtime = "simulated"
[switcher.workload.sim.simulated]
memory_mib = 1024
ready_delay = "1s"
never_ready = true
`
	const flat = `[switcher.mining]
runtime = "exec"
start_command = ["start", "{gpu_index}"]
stop_command = ["stop"]
status_command = ["status"]
command_timeout = "5s"

[switcher.workload.vllm]
runtime = "docker"
port = 8000
image = "vllm/vllm-openai:v0.6.3"
cmd = ["--port", "{port}"]
network = "bridge"

[switcher.workload.sim]
runtime = "simulated"
sim_memory_mib = 1024
sim_ready_delay = "1s"
sim_never_ready = true
`
	// Half and half: flat keys next to a sub-table of the same runtime.
	const mixed = `[switcher.mining]
runtime = "exec"
start_command = ["start", "{gpu_index}"]
[switcher.mining.exec]
stop_command = ["stop"]
status_command = ["status"]
command_timeout = "5s"

[switcher.workload.vllm]
runtime = "docker"
port = 8000
image = "vllm/vllm-openai:v0.6.3"
[switcher.workload.vllm.docker]
cmd = ["--port", "{port}"]
network = "bridge"

[switcher.workload.sim]
runtime = "simulated"
[switcher.workload.sim.simulated]
memory_mib = 1024
ready_delay = "1s"
never_ready = true
`
	tests := []struct {
		name, toml string
		warnings   []string
	}{
		{"sub-tables", sub, nil},
		{"flat", flat, []string{
			`key "switcher.mining.start_command": is deprecated: move it to [switcher.mining.exec] as start_command`,
			`key "switcher.mining.stop_command": is deprecated: move it to [switcher.mining.exec] as stop_command`,
			`key "switcher.mining.status_command": is deprecated: move it to [switcher.mining.exec] as status_command`,
			`key "switcher.mining.command_timeout": is deprecated: move it to [switcher.mining.exec] as command_timeout`,
			`key "switcher.workload.sim.sim_memory_mib": is deprecated: move it to [switcher.workload.sim.simulated] as memory_mib`,
			`key "switcher.workload.sim.sim_ready_delay": is deprecated: move it to [switcher.workload.sim.simulated] as ready_delay`,
			`key "switcher.workload.sim.sim_never_ready": is deprecated: move it to [switcher.workload.sim.simulated] as never_ready`,
			`key "switcher.workload.vllm.image": is deprecated: move it to [switcher.workload.vllm.docker] as image`,
			`key "switcher.workload.vllm.cmd": is deprecated: move it to [switcher.workload.vllm.docker] as cmd`,
			`key "switcher.workload.vllm.network": is deprecated: move it to [switcher.workload.vllm.docker] as network`,
		}},
		{"mixed", mixed, []string{
			`key "switcher.mining.start_command": is deprecated: move it to [switcher.mining.exec] as start_command`,
			`key "switcher.workload.vllm.image": is deprecated: move it to [switcher.workload.vllm.docker] as image`,
		}},
	}
	want, err := Parse([]byte(sub))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Switcher.Workloads(), want.Switcher.Workloads()) || !reflect.DeepEqual(cfg.Switcher.Mining, want.Switcher.Mining) {
				t.Errorf("decoded\n%+v\nwant\n%+v", cfg.Switcher.Workloads(), want.Switcher.Workloads())
			}
			var got []string
			for _, w := range cfg.Warnings(time.Now()) {
				if strings.Contains(w.Message, "deprecated") {
					got = append(got, w.String())
				}
			}
			if !reflect.DeepEqual(got, tc.warnings) {
				t.Errorf("deprecation warnings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.warnings, "\n"))
			}
		})
	}
	m, _ := want.Switcher.MiningWorkload()
	v := want.Switcher.Workloads()["vllm"]
	s := want.Switcher.Workloads()["sim"]
	if m.Exec.CommandTimeout.D() != 5*time.Second || v.Docker.Network != "bridge" || s.Simulated.MemoryMiB != 1024 ||
		!s.Simulated.NeverReady || s.Simulated.Load != 0.9 {
		t.Errorf("sub-table values: mining %+v, vllm %+v, sim %+v", *m.Exec, *v.Docker, *s.Simulated)
	}
}

// Errors in the sub-table shape name the key where it was written; the
// same key written both ways is an error.
func TestWorkloadSubTableErrors(t *testing.T) {
	tests := []struct{ name, toml, wantErr string }{
		{"both shapes", "[switcher.workload.x]\nruntime = \"docker\"\nimage = \"a\"\n[switcher.workload.x.docker]\nimage = \"b\"\n",
			`line 3: key "switcher.workload.x.image": is set both here and as image in [switcher.workload.x.docker]: keep only the one in [switcher.workload.x.docker]`},
		{"both shapes, simulated", "[switcher.mining]\nruntime = \"simulated\"\nsim_load = 0.5\n[switcher.mining.simulated]\nload = 0.6\n",
			`key "switcher.mining.sim_load": is set both here and as load in [switcher.mining.simulated]`},
		{"unknown key in a sub-table", "[switcher.workload.x]\nruntime = \"docker\"\n[switcher.workload.x.docker]\nimage = \"b\"\ngpus = 2\n",
			`line 5: unknown key "switcher.workload.x.docker.gpus"`},
		{"flat name in a sub-table", "[switcher.workload.x]\nruntime = \"simulated\"\n[switcher.workload.x.simulated]\nsim_load = 0.5\n",
			`unknown key "switcher.workload.x.simulated.sim_load"`},
		{"another runtime's sub-table", "[switcher.workload.x]\nruntime = \"exec\"\n[switcher.workload.x.exec]\nstart_command = [\"a\"]\n" +
			"stop_command = [\"b\"]\nstatus_command = [\"c\"]\n[switcher.workload.x.docker]\nimage = \"y\"\n",
			`line 8: key "switcher.workload.x.docker.image": belongs to runtime "docker", but this workload's runtime is "exec"`},
		{"missing key in a sub-table", "[switcher.workload.x]\nruntime = \"exec\"\n[switcher.workload.x.exec]\nstart_command = [\"a\"]\n",
			`key "switcher.workload.x.exec.stop_command": an exec workload needs stop_command`},
		{"missing image, no sub-table", "[switcher.workload.x]\nruntime = \"docker\"\n",
			`key "switcher.workload.x.image": a docker workload needs an image (in [switcher.workload.x.docker])`},
		{"bad value in a sub-table", "[switcher.workload.x]\nruntime = \"simulated\"\n[switcher.workload.x.simulated]\nload = 2.0\n",
			`line 4: key "switcher.workload.x.simulated.load"`},
		{"bad placeholder in a sub-table", "[switcher.workload.x]\nruntime = \"docker\"\n[switcher.workload.x.docker]\nimage = \"y\"\ncmd = [\"{gpu}\"]\n",
			`line 5: key "switcher.workload.x.docker.cmd": unknown placeholder {gpu}`},
		{"wrong type of a flat key", "[switcher.workload.x]\nruntime = \"docker\"\nimage = 5\n", `image`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
