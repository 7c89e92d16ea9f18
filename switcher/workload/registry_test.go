package workload

import (
	"strings"
	"testing"
	"time"
)

func TestRegistry(t *testing.T) {
	newExec := func(env Env) (Runtime, error) { return NewExec(env.Log, nil), nil }
	r := NewRegistry()
	tests := []struct {
		kind    string
		d       Driver
		wantErr string // "" means registered
	}{
		{KindExec, Driver{New: newExec}, ""},
		{KindDocker, Driver{New: newExec, CallBound: time.Minute}, ""},
		{KindSimulated, Driver{New: newExec, CallBound: time.Second, SimulatedOnly: true}, ""},
		{KindExec, Driver{New: newExec}, `runtime kind "exec" registered twice`},
		{"", Driver{New: newExec}, "without a kind"},
		{"kubernetes", Driver{}, `driver "kubernetes" has no New func`},
	}
	for _, tc := range tests {
		err := r.Register(tc.kind, tc.d)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("Register(%q): %v, want %q", tc.kind, err, tc.wantErr)
		}
	}
	if got := strings.Join(r.Kinds(), ","); got != "docker,exec,simulated" {
		t.Errorf("Kinds %s", got)
	}
	if d, ok := r.Lookup(KindSimulated); !ok || !d.SimulatedOnly {
		t.Errorf("Lookup(simulated): %+v %v", d, ok)
	}
	if _, ok := r.Lookup("kubernetes"); ok {
		t.Error("a kind whose registration failed is registered")
	}
	if got := r.MaxCallBound(); got != time.Minute {
		t.Errorf("MaxCallBound %s, want 1m", got)
	}
	if got := NewRegistry().MaxCallBound(); got != 0 {
		t.Errorf("empty registry's MaxCallBound %s", got)
	}
}

// ParamsOf gives a runtime its own settings, and the zero value for
// another kind's or none (a workload no longer configured).
func TestParamsOf(t *testing.T) {
	d := Definition{Runtime: KindExec, Params: ExecParams{StartCommand: []string{"a"}, CommandTimeout: time.Second}}
	if p := ParamsOf[ExecParams](d); p.CommandTimeout != time.Second || len(p.StartCommand) != 1 {
		t.Errorf("exec params %+v", p)
	}
	if p := ParamsOf[DockerParams](d); p.Image != "" || p.Cmd != nil {
		t.Errorf("docker params of an exec workload %+v", p)
	}
	if p := ParamsOf[SimParams](Definition{}); p != (SimParams{}) {
		t.Errorf("params of a bare definition %+v", p)
	}
}
