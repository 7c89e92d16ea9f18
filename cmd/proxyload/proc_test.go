package main

import (
	"os"
	"strings"
	"testing"
)

// A real /proc/PID/stat line, with a comm holding spaces and a ')'.
const statFixture = "4242 (proxy d) x) S 1 4242 4242 0 -1 4194560 12345 0 0 0 1534 266 0 0 20 0 9 0 123456 1234567168 20480 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

const statusFixture = `Name:	proxyd
Umask:	0022
State:	S (sleeping)
Tgid:	4242
VmPeak:	 1300000 kB
VmSize:	 1205632 kB
VmHWM:	  120000 kB
VmRSS:	   81920 kB
RssAnon:	   70000 kB
Threads:	9
`

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    procStat
		wantErr bool
	}{
		{"comm with spaces and paren", statFixture, procStat{Comm: "proxy d) x", State: "S", UTime: 1534, STime: 266, Threads: 9}, false},
		{"plain comm", "1 (init) R 0 1 1 0 -1 0 0 0 0 0 100 50 0 0 20 0 1 0 5 0 0", procStat{Comm: "init", State: "R", UTime: 100, STime: 50, Threads: 1}, false},
		{"no comm", "1 init R 0", procStat{}, true},
		{"truncated", "1 (x) S 1 2 3", procStat{}, true},
		{"bad utime", "1 (x) S 0 1 1 0 -1 0 0 0 0 0 abc 50 0 0 20 0 1 0 5 0 0", procStat{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat(tc.line)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	st, _ := parseProcStat(statFixture)
	if got := st.CPUSeconds(); got != 18.0 {
		t.Fatalf("CPUSeconds = %v, want 18 (1800 ticks at %d Hz)", got, clockTicks)
	}
}

func TestParseProcStatus(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    procStatus
		wantErr bool
	}{
		{"full", statusFixture, procStatus{VmRSS: 81920, VmHWM: 120000}, false},
		{"no HWM", "VmRSS:\t 12 kB\n", procStatus{VmRSS: 12}, false},
		{"kernel thread", "Name:\tkthreadd\nState:\tS\n", procStatus{}, true},
		{"bad unit", "VmRSS:\t 12 MB\n", procStatus{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStatus(tc.text)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSampleSelf(t *testing.T) {
	s, err := sampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKiB <= 0 || s.HWMKiB < s.RSSKiB || s.Threads < 1 || s.CPUSeconds < 0 {
		t.Fatalf("implausible sample of this process: %+v", s)
	}
	if _, err := sampleProc(1 << 30); err == nil {
		t.Fatal("sampling a PID that cannot exist succeeded")
	}
}

func TestParseMachineFiles(t *testing.T) {
	cpu := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: other\n"
	if got := parseCPUModel(cpu); got != "Intel(R) Xeon(R) Processor" {
		t.Fatalf("cpu model %q", got)
	}
	if got := parseCPUModel("processor: 0\n"); got != "" {
		t.Fatalf("cpu model without one: %q", got)
	}
	mem := "MemTotal:       24684084 kB\nMemFree:        23000000 kB\n"
	if got, err := parseMemTotal(mem); err != nil || got != 24684084 {
		t.Fatalf("MemTotal %d, %v", got, err)
	}
	if _, err := parseMemTotal("MemFree: 1 kB\n"); err == nil {
		t.Fatal("meminfo without MemTotal accepted")
	}
	la, err := parseLoadavg("0.26 1.54 1.51 1/83 10911\n")
	if err != nil || la != [3]float64{0.26, 1.54, 1.51} {
		t.Fatalf("loadavg %v, %v", la, err)
	}
	if _, err := parseLoadavg("0.1 x 0.3"); err == nil {
		t.Fatal("bad loadavg accepted")
	}
	for _, tc := range []struct {
		text   string
		lo, hi int
		ok     bool
	}{
		{"32768\t60999\n", 32768, 60999, true},
		{"1024 65535", 1024, 65535, true},
		{"60999 32768", 0, 0, false},
		{"0 100", 0, 0, false},
		{"32768", 0, 0, false},
	} {
		lo, hi, err := parsePortRange(tc.text)
		if (err == nil) != tc.ok || (tc.ok && (lo != tc.lo || hi != tc.hi)) {
			t.Errorf("parsePortRange(%q) = %d, %d, %v", tc.text, lo, hi, err)
		}
	}
	m := readMachine()
	if m.NProc < 1 || m.GoVersion == "" || !strings.Contains(m.OSArch, "/") {
		t.Fatalf("machine %+v", m)
	}
}
