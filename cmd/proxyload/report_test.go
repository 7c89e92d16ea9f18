package main

import (
	"strings"
	"testing"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

func rec(kind stratumtest.ShareKind, v stratumtest.Verdict, code int, h byte, sent, answered int64, diff float64) shareRec {
	return shareRec{Kind: kind, Verdict: v, Code: code, Hash: [32]byte{h}, SentAt: sent, AnsweredAt: answered, ShareDiff: diff}
}

func TestUnaccounted(t *testing.T) {
	p, err := stratumtest.StartPool(stratumtest.PoolOptions{InitialDifficulty: 1e-7})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	good, acc := stratumtest.ShareGood, stratumtest.VerdictAccepted
	d := &runData{pool: newPoolCollector(monoClock{}), upstream: p}
	d.pool.acc[[32]byte{1}] = 5
	d.results = []shareRec{
		rec(good, acc, 0, 1, 1, 2, 2e-7),                          // accepted upstream (per the path's record)
		rec(good, acc, 0, 2, 1, 2, 2e-7),                          // never reached the pool
		rec(good, acc, 0, 3, 1, 2, 1e-8),                          // below the pool's difficulty: not forwarded
		rec(good, stratumtest.VerdictRejected, 23, 4, 1, 2, 2e-7), // the miner was not told true
	}
	tests := []struct {
		name     string
		poolDiff float64
		keep     int
		accepted uint64
		want     []byte
		how      string
	}{
		// The pool itself accepted nothing: both shares that met its
		// difficulty are unaccounted by Pool.Unaccounted.
		{"Pool.Unaccounted", 1e-7, 1000, 0, []byte{1, 2}, "Pool.Unaccounted"},
		// --pool-difficulty-factor 4: a 2e-7 share is below the proxy's
		// pool session difficulty, so the proxy rightly kept it.
		{"Pool.Unaccounted, factor 4", 4e-7, 1000, 0, nil, "Pool.Unaccounted"},
		// More accepted shares than the pool keeps: the path's record
		// decides.
		{"fallback", 1e-7, 2, 10, []byte{2}, "the path's record"},
		{"fallback, factor 4", 4e-7, 2, 10, nil, "the path's record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{cfg: config{Difficulty: 1e-7}, keep: tc.keep}
			d.poolDifficulty = tc.poolDiff
			got, how := r.unaccounted(d, tc.accepted)
			if !strings.HasPrefix(how, tc.how) {
				t.Fatalf("decided by %q, want %q", how, tc.how)
			}
			var hashes []byte
			for _, s := range got {
				hashes = append(hashes, s.Hash[0])
			}
			if string(hashes) != string(tc.want) {
				t.Fatalf("unaccounted %v, want %v", hashes, tc.want)
			}
		})
	}
}

func TestAccountingProblems(t *testing.T) {
	good, acc, rej, lost := stratumtest.ShareGood, stratumtest.VerdictAccepted, stratumtest.VerdictRejected, stratumtest.VerdictLost
	stale, dup := stratumtest.ShareStale, stratumtest.ShareDuplicate
	base := func() *runData {
		d := &runData{difficulty: 1e-7, pool: newPoolCollector(monoClock{}), windowStart: 0, windowEnd: 10}
		d.pool.acc[[32]byte{1}] = 4
		d.results = []shareRec{
			rec(good, acc, 0, 1, 1, 5, 2e-7),
			rec(stale, rej, 21, 2, 2, 3, 2e-7),
			rec(dup, rej, 22, 1, 3, 4, 2e-7),
		}
		d.final.Submitted = 3
		return d
	}
	tests := []struct {
		name     string
		path     string
		mutate   func(*runData)
		problems []string // substrings, in order
		notes    []string
	}{
		{name: "clean", path: "direct"},
		{name: "lost share", path: "proxied", mutate: func(d *runData) {
			d.results = append(d.results, rec(good, lost, 0, 9, 6, 0, 2e-7))
			d.final.Submitted++
		}, problems: []string{"1 submits never got an answer"}},
		{name: "good share rejected", path: "proxied", mutate: func(d *runData) {
			d.results = append(d.results, rec(good, rej, 20, 9, 6, 7, 2e-7))
			d.final.Submitted++
		}, problems: []string{"1 good shares were not accepted"}},
		{name: "bad share answered otherwise through a proxy", path: "proxied", mutate: func(d *runData) {
			d.results[1].Code = 20
		}, notes: []string{"1 bad shares were answered otherwise"}},
		{name: "bad share answered otherwise on the direct path", path: "direct", mutate: func(d *runData) {
			d.results[1].Code = 20
		}, problems: []string{"1 unexpected verdicts on the direct path"}},
		{name: "unaccounted", path: "proxied", mutate: func(d *runData) {
			d.unaccounted = []shareRec{d.results[0]}
		}, problems: []string{"1 shares unaccounted"}},
		{name: "records missing", path: "direct", mutate: func(d *runData) {
			d.final.Submitted = 5
		}, problems: []string{"3 submits recorded but miners sent 5"}},
		{name: "pool accepted one the miner was not told", path: "proxied", mutate: func(d *runData) {
			d.pool.acc[[32]byte{7}] = 5
		}, notes: []string{"1 shares the pool accepted were not acknowledged"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := base()
			if tc.mutate != nil {
				tc.mutate(d)
			}
			rr := &RunReport{Path: tc.path}
			d.account(rr)
			if len(rr.Problems) != len(tc.problems) || rr.Accounting.OK != (len(tc.problems) == 0) {
				t.Fatalf("problems %q, want %q (ok %v)", rr.Problems, tc.problems, rr.Accounting.OK)
			}
			for i, p := range tc.problems {
				if !strings.Contains(rr.Problems[i], p) {
					t.Fatalf("problem %q, want %q", rr.Problems[i], p)
				}
			}
			if len(rr.Notes) != len(tc.notes) {
				t.Fatalf("notes %q, want %q", rr.Notes, tc.notes)
			}
			for i, n := range tc.notes {
				if !strings.Contains(rr.Notes[i], n) {
					t.Fatalf("note %q, want %q", rr.Notes[i], n)
				}
			}
			a := rr.Accounting
			if a.Submitted != uint64(len(d.results)) || a.ByKind["good"] == nil || a.ByKind["stale"].Expect != "rejected 21" {
				t.Fatalf("accounting %+v", a)
			}
		})
	}
}

func TestFormatting(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -12345: "-12,345"} {
		if got := fmtInt(n); got != want {
			t.Errorf("fmtInt(%d) = %q, want %q", n, got, want)
		}
	}
	for v, want := range map[float64]string{0.1234: "0.123", 12.345: "12.35", 1234.5: "1234", -0.5: "-0.500"} {
		if got := fmtMS(v); got != want {
			t.Errorf("fmtMS(%v) = %q, want %q", v, got, want)
		}
	}
	for n, want := range map[uint64]string{12: "12 B", 2048: "2.0 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.00 GiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if got := codes(map[string]uint64{"23": 5, "21": 1000}); got != "21:1,000 23:5" {
		t.Errorf("codes = %q", got)
	}
	if got := styleMix([]string{"antminer", "whatsminer", "antminer"}); got != "antminer×2, whatsminer" {
		t.Errorf("styleMix = %q", got)
	}
	if got := wrap("aa bb cc dd", 5); len(got) != 2 || got[0] != "aa bb" || got[1] != "cc dd" {
		t.Errorf("wrap = %q", got)
	}
}
