package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/nvml"
)

// gpusSampleTimeout bounds the one telemetry pass `proxyd gpus` takes.
const gpusSampleTimeout = 30 * time.Second

func gpusCmd(args []string, io stdio) int {
	fs := newFlagSet("gpus", "[--config FILE] [--backend auto|nvml|simulated] [--json]",
		"List this node's GPUs from the configured [gpu] backend, as nvidia-smi would, with proxyd's\n"+
			"health verdict from one telemetry sample, and every GPU process with its owner (mining,\n"+
			"ai:<contract>, foreign, or unknown with the reason) read from /proc. (XID events, and the\n"+
			"containers proxyd started, are known only to the running daemon: GET /api/v1/gpus shows its\n"+
			"view.) Exits 1 when no GPU backend is available, naming why.", io)
	path := fs.String("config", config.DefaultPath, "TOML config `file` ([gpu] section); defaults apply if the default file is absent")
	backend := fs.String("backend", "", "override [gpu] backend: auto, nvml or simulated")
	asJSON := fs.Bool("json", false, "print JSON (the shape of GET /api/v1/gpus) instead of a table")
	if done, code := fs.parse(args, io); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(io.err, "proxyd gpus: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := loadGPUsConfig(*path, explicit)
	if err != nil {
		fmt.Fprintf(io.err, "proxyd gpus: %v\n", err)
		return exitConfig
	}
	b := cfg.GPU.Backend
	if *backend != "" {
		switch *backend {
		case nvml.BackendAuto, nvml.BackendNVML, nvml.BackendSimulated:
			b = *backend
		default:
			fmt.Fprintf(io.err, "proxyd gpus: --backend %q: use auto, nvml or simulated\n", *backend)
			return exitUsage
		}
	}
	if b == nvml.BackendOff {
		fmt.Fprintf(io.err, "proxyd gpus: GPU features are off ([gpu] backend = \"off\" in %s); pass --backend nvml to look anyway\n", cfg.Path)
		return exitFailure
	}

	lib, err := nvml.OpenLibrary(b, nvml.LibraryOptions{})
	if err != nil {
		if b == nvml.BackendAuto && errors.Is(err, nvml.ErrLibraryNotFound) {
			fmt.Fprintf(io.err, "proxyd gpus: no GPUs: %v; GPU features are off with backend \"auto\"\n", err)
		} else {
			fmt.Fprintf(io.err, "proxyd gpus: %v\n", err)
		}
		return exitFailure
	}
	defer lib.Close() //nolint:errcheck // nothing to do about a failed shutdown on exit
	m, err := nvml.New(lib, nvml.Options{
		Backend:         lib.Backend,
		AppXIDs:         cfg.GPU.AppXIDs,
		SlowdownSustain: cfg.GPU.SlowdownSustain.D(),
	})
	if err != nil {
		fmt.Fprintf(io.err, "proxyd gpus: %v\n", err)
		return exitFailure
	}
	ctx, cancel := context.WithTimeout(context.Background(), gpusSampleTimeout)
	defer cancel()
	if err := m.SampleNow(ctx); err != nil {
		fmt.Fprintf(io.err, "proxyd gpus: reading telemetry: %v\n", err)
		return exitFailure
	}
	node := m.Node()
	if *asJSON {
		enc := json.NewEncoder(io.out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(node); err != nil {
			fmt.Fprintf(io.err, "proxyd gpus: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	printGPUTable(io.out, node)
	return exitOK
}

// loadGPUsConfig reads the config; without --config, an absent default file
// means defaults (so `proxyd gpus --backend simulated` works anywhere).
func loadGPUsConfig(path string, explicit bool) (*config.Config, error) {
	if !explicit {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			cfg := config.Default()
			cfg.Path = "built-in defaults"
			return cfg, nil
		}
	}
	return config.Load(path)
}

func printGPUTable(w io.Writer, n nvml.Node) {
	fmt.Fprintf(w, "Backend %s   Driver %s   NVML %s   CUDA %s   GPUs %d\n\n",
		n.Backend, orNA(n.DriverVersion), orNA(n.NVMLVersion), orNA(n.CUDADriverVersion), len(n.GPUs))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tUUID\tNAME\tBUS ID\tPERSIST\tTEMP\tPOWER\tMEMORY\tUTIL\tPROCS\tMIG\tHEALTH")
	for _, g := range n.GPUs {
		t := g.Telemetry
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			g.Index, g.UUID, g.Name, g.PCIBusID,
			field(t, nvml.FieldPersistence, t != nil && t.PersistenceMode != nil, func() string { return onOff(*t.PersistenceMode) }),
			field(t, nvml.FieldTemperature, t != nil && t.TemperatureC != nil, func() string { return fmt.Sprintf("%dC", *t.TemperatureC) }),
			power(t), memory(g, t),
			field(t, nvml.FieldUtilization, t != nil && t.UtilizationGPU != nil, func() string { return fmt.Sprintf("%d%%", *t.UtilizationGPU) }),
			procs(t), mig(g), g.Health.State)
	}
	tw.Flush()
	var notes []string
	for _, g := range n.GPUs {
		for _, r := range g.Health.Reasons {
			notes = append(notes, fmt.Sprintf("GPU %d %s: %s", g.Index, r.Severity, r.Message))
		}
	}
	for _, p := range n.Problems {
		notes = append(notes, "problem: "+p)
	}
	printProcessTable(w, n)
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "\n"))
	}
}

// printProcessTable lists every GPU process with its owner; nothing when
// no GPU has one.
func printProcessTable(w io.Writer, n nvml.Node) {
	type row struct {
		gpu int
		p   nvml.Process
	}
	var rows []row
	for _, g := range n.GPUs {
		ps, _ := g.Telemetry.Processes()
		for _, p := range ps {
			rows = append(rows, row{g.Index, p})
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tPID\tMEMORY\tOWNER")
	for _, r := range rows {
		mem := fmt.Sprintf("%dMiB", r.p.UsedMemoryBytes>>20)
		if r.p.MemoryUnknown {
			mem = "?"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", r.gpu, r.p.PID, mem, r.p.Owner)
	}
	tw.Flush()
}

// field prints a telemetry value, "n/a" where the GPU does not support it
// and "ERR" where the read failed.
func field(t *nvml.Telemetry, name string, ok bool, value func() string) string {
	switch {
	case ok:
		return value()
	case t != nil && !t.Supported(name):
		return "n/a"
	case t != nil && t.Errors[name] != "":
		return "ERR"
	}
	return "-"
}

func power(t *nvml.Telemetry) string {
	draw := field(t, nvml.FieldPowerDraw, t != nil && t.PowerDrawMW != nil, func() string { return fmt.Sprintf("%dW", *t.PowerDrawMW/1000) })
	limit := field(t, nvml.FieldPowerLimit, t != nil && t.PowerLimitMW != nil, func() string { return fmt.Sprintf("%dW", *t.PowerLimitMW/1000) })
	return draw + " / " + limit
}

func memory(g nvml.GPU, t *nvml.Telemetry) string {
	used := field(t, nvml.FieldMemory, t != nil && t.MemoryUsedBytes != nil, func() string { return fmt.Sprintf("%dMiB", *t.MemoryUsedBytes>>20) })
	return fmt.Sprintf("%s / %dMiB", used, g.MemoryTotalBytes>>20)
}

func procs(t *nvml.Telemetry) string {
	ps, known := t.Processes()
	if !known {
		return "?"
	}
	if len(ps) == 0 {
		return "0"
	}
	pids := make([]string, len(ps))
	for i, p := range ps {
		pids[i] = fmt.Sprint(p.PID)
	}
	return fmt.Sprintf("%d (%s)", len(ps), strings.Join(pids, ","))
}

func mig(g nvml.GPU) string {
	if g.MIG == nil {
		return "n/a"
	}
	s := onOff(g.MIG.Current)
	if g.MIG.Pending != g.MIG.Current {
		s += "→" + onOff(g.MIG.Pending)
	}
	return s
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
