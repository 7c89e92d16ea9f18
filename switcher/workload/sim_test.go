package workload

import (
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
	"github.com/hashgate/proxyd/switcher/internal/fakeclock"
)

func TestSimWorkloadShowsOnItsGPU(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	srv := nvmlsim.New(nvmlsim.Options{AfterFunc: clock.AfterFunc})
	rt := NewSim(SimOptions{Server: srv, Now: clock.Now})
	u := srv.UUIDs()[0]
	spec := Spec{Name: "llm", Definition: Definition{Runtime: KindSimulated, Params: SimParams{MemoryMiB: 1024, Load: 1,
		StartDelay: 2 * time.Second, ReadyDelay: 5 * time.Second, StopDelay: time.Second}}}
	in := Instance{Workload: "llm", Contract: "c", GPUUUID: u}
	h, err := rt.Start(t.Context(), spec, in)
	if err != nil {
		t.Fatal(err)
	}
	procs := func() int { st, _ := srv.State(u); return len(st.Processes) }
	if st, _ := rt.Status(t.Context(), spec, h); !st.Running || st.Ready || procs() != 0 {
		t.Errorf("just started: %+v, %d procs", st, procs())
	}
	clock.Advance(2 * time.Second)
	if st, _ := srv.State(u); len(st.Processes) != 1 || st.Processes[0].UsedMemory != 1<<30 || st.UtilGPU != 100 {
		t.Errorf("after the start delay: %+v", st)
	}
	clock.Advance(3 * time.Second)
	if st, _ := rt.Status(t.Context(), spec, h); !st.Ready {
		t.Errorf("after the ready delay: %+v", st)
	}
	// A second workload on the same GPU is a violation.
	if _, err := rt.Start(t.Context(), spec, in); err != nil {
		t.Fatal(err)
	}
	if v := rt.Violations(); len(v) != 2 || !strings.Contains(v[0], "beside") || !strings.Contains(v[1], "1 process") {
		t.Errorf("violations %v", v)
	}
	// Refuse-release: stop and kill fail, the process stays.
	_ = srv.Update(u, func(g *nvmlsim.GPUState) { g.RefuseRelease = true })
	if err := rt.Stop(t.Context(), spec, h, false); err == nil {
		t.Error("stop succeeded on a refusing GPU")
	}
	if err := rt.Stop(t.Context(), spec, h, true); err == nil || !strings.Contains(err.Error(), "SIGKILL") {
		t.Errorf("kill on a refusing GPU: %v", err)
	}
	_ = srv.Update(u, func(g *nvmlsim.GPUState) { g.RefuseRelease = false })
	if err := rt.Stop(t.Context(), spec, h, false); err != nil {
		t.Fatal(err)
	}
	if st, _ := rt.Status(t.Context(), spec, h); !st.Gone {
		t.Errorf("stopped: %+v", st)
	}
	if procs() != 1 {
		t.Errorf("the process left before the stop delay")
	}
	clock.Advance(time.Second)
	if procs() != 0 {
		t.Errorf("the process stayed after the stop delay")
	}
	if n := len(rt.Calls()); n != 5 {
		t.Errorf("%d calls recorded", n)
	}
}
