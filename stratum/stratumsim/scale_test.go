package stratumsim

import (
	"context"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestScale measures a large fleet against the Pool in one process. It runs
// only with STRATUMTEST_SCALE=<miners> (each miner costs two file
// descriptors here: its own and the pool's).
func TestScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("STRATUMTEST_SCALE"))
	if n <= 0 {
		t.Skip("set STRATUMTEST_SCALE=<miners> to run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	diff := 1e-6
	if v, err := strconv.ParseFloat(os.Getenv("STRATUMTEST_SCALE_DIFF"), 64); err == nil {
		diff = v
	}
	p := NewPool(t, PoolOptions{InitialDifficulty: diff, KeepShares: -1})
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()

	// Pool-side cost of a session, measured with bare connections.
	var conns []net.Conn
	for range min(n, 1000) {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if err := p.WaitFor(ctx, func(s PoolStats) bool { return s.SessionsOpen == len(conns) }); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	poolPer := float64((ms1.HeapInuse+ms1.StackInuse)-(ms0.HeapInuse+ms0.StackInuse)) / float64(len(conns)) / 1024
	t.Logf("pool session + bare client conn: %.1f KiB each", poolPer)
	for _, c := range conns {
		c.Close()
	}
	if err := p.WaitFor(ctx, func(s PoolStats) bool { return s.SessionsOpen == 0 }); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	f := NewFleet(t, p.Addr(), FleetOptions{Miners: n, Styles: AllStyles(), DialConcurrency: 128})
	if err := p.WaitReady(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitFor(ctx, func(s FleetStats) bool { return s.Notifies >= uint64(n) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("connect+handshake %d miners: %v", n, time.Since(start))
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	per := float64((ms1.HeapInuse+ms1.StackInuse)-(ms0.HeapInuse+ms0.StackInuse)) / float64(n) / 1024
	t.Logf("goroutines %d (+%d), heap+stacks per miner+session %.1f KiB, so about %.1f KiB per miner",
		runtime.NumGoroutine(), runtime.NumGoroutine()-g0, per, per-poolPer)

	// Fan-out of one clean job to all miners.
	before := f.Stats().Notifies
	cpu0 := cpuTime()
	j := p.NewJob(true)
	if err := f.WaitFor(ctx, func(s FleetStats) bool { return s.Notifies >= before+uint64(n) }); err != nil {
		t.Fatal(err)
	}
	last := time.Time{}
	for _, m := range f.Miners() {
		if ev, ok := m.LastEvent(EventNotify); ok && ev.At.After(last) {
			last = ev.At
		}
	}
	t.Logf("fan-out of one job to %d miners: %v (cpu %v incl. pool)", n, last.Sub(j.CreatedAt), cpuTime()-cpu0)

	// Shares: every miner submits 2.
	cpu0 = cpuTime()
	start = time.Now()
	res, err := f.SubmitEach(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	t.Logf("%d shares at diff %g: %v wall, %v cpu (%.0f shares/s; hashing %.0f%%)", len(res), diff, el, cpuTime()-cpu0,
		float64(len(res))/el.Seconds(), 100*float64(f.Stats().Hashes)*156e-9/(cpuTime()-cpu0).Seconds())
	if st := p.Stats(); st.Accepted != uint64(2*n) {
		t.Fatalf("%+v", st)
	}

	// Idle cost: a job every second for 5 s.
	cpu0 = cpuTime()
	for range 5 {
		p.NewJob(false)
		time.Sleep(time.Second)
	}
	t.Logf("idle with a job/s: %.1f%% of one core (incl. pool)", 100*(cpuTime()-cpu0).Seconds()/5)
}
