package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Deprecated flat workload keys. Before the runtime sub-tables, a
// workload's table held every runtime's keys side by side:
//
//	[switcher.workload.vllm]
//	runtime = "docker"
//	image = "vllm/vllm-openai:v0.6.3"
//
// Such files still load: each flat key moves into its runtime's sub-table
// ([switcher.workload.vllm.docker] image = ...) with a warning that names
// the old key and the new place. The same key written both ways is an
// error. Messages about a flat key name it where it was written.

// legacyWorkload holds the flat keys of one workload table.
type legacyWorkload struct {
	Image          string   `toml:"image"`
	Cmd            []string `toml:"cmd"`
	Env            []string `toml:"env"`
	Binds          []string `toml:"binds"`
	Network        string   `toml:"network"`
	StartCommand   []string `toml:"start_command"`
	StopCommand    []string `toml:"stop_command"`
	StatusCommand  []string `toml:"status_command"`
	KillCommand    []string `toml:"kill_command"`
	CommandTimeout Duration `toml:"command_timeout"`
	SimMemoryMiB   int      `toml:"sim_memory_mib"`
	SimLoad        float64  `toml:"sim_load"`
	SimStartDelay  Duration `toml:"sim_start_delay"`
	SimReadyDelay  Duration `toml:"sim_ready_delay"`
	SimStopDelay   Duration `toml:"sim_stop_delay"`
	SimNeverReady  bool     `toml:"sim_never_ready"`
}

// legacyDoc is the part of the file the flat keys can sit in.
type legacyDoc struct {
	Switcher struct {
		Mining   *legacyWorkload           `toml:"mining"`
		Workload map[string]legacyWorkload `toml:"workload"`
	} `toml:"switcher"`
}

// legacyKey is one flat key: its runtime, its name in the runtime's
// sub-table and how it moves there.
type legacyKey struct {
	runtime, old, name string
	move               func(l *legacyWorkload, w *Workload)
}

func legacyKeys() []legacyKey {
	docker := func(w *Workload) *DockerWorkload { w.Docker = cloneOrNew(w.Docker); return w.Docker }
	exec := func(w *Workload) *ExecWorkload { w.Exec = cloneOrNew(w.Exec); return w.Exec }
	sim := func(w *Workload) *SimulatedWorkload { w.Simulated = cloneOrNew(w.Simulated); return w.Simulated }
	return []legacyKey{
		{RuntimeDocker, "image", "image", func(l *legacyWorkload, w *Workload) { docker(w).Image = l.Image }},
		{RuntimeDocker, "cmd", "cmd", func(l *legacyWorkload, w *Workload) { docker(w).Cmd = l.Cmd }},
		{RuntimeDocker, "env", "env", func(l *legacyWorkload, w *Workload) { docker(w).Env = l.Env }},
		{RuntimeDocker, "binds", "binds", func(l *legacyWorkload, w *Workload) { docker(w).Binds = l.Binds }},
		{RuntimeDocker, "network", "network", func(l *legacyWorkload, w *Workload) { docker(w).Network = l.Network }},
		{RuntimeExec, "start_command", "start_command", func(l *legacyWorkload, w *Workload) { exec(w).StartCommand = l.StartCommand }},
		{RuntimeExec, "stop_command", "stop_command", func(l *legacyWorkload, w *Workload) { exec(w).StopCommand = l.StopCommand }},
		{RuntimeExec, "status_command", "status_command", func(l *legacyWorkload, w *Workload) { exec(w).StatusCommand = l.StatusCommand }},
		{RuntimeExec, "kill_command", "kill_command", func(l *legacyWorkload, w *Workload) { exec(w).KillCommand = l.KillCommand }},
		{RuntimeExec, "command_timeout", "command_timeout", func(l *legacyWorkload, w *Workload) { exec(w).CommandTimeout = l.CommandTimeout }},
		{RuntimeSimulated, "sim_memory_mib", "memory_mib", func(l *legacyWorkload, w *Workload) { sim(w).MemoryMiB = l.SimMemoryMiB }},
		{RuntimeSimulated, "sim_load", "load", func(l *legacyWorkload, w *Workload) { sim(w).Load = l.SimLoad }},
		{RuntimeSimulated, "sim_start_delay", "start_delay", func(l *legacyWorkload, w *Workload) { sim(w).StartDelay = l.SimStartDelay }},
		{RuntimeSimulated, "sim_ready_delay", "ready_delay", func(l *legacyWorkload, w *Workload) { sim(w).ReadyDelay = l.SimReadyDelay }},
		{RuntimeSimulated, "sim_stop_delay", "stop_delay", func(l *legacyWorkload, w *Workload) { sim(w).StopDelay = l.SimStopDelay }},
		{RuntimeSimulated, "sim_never_ready", "never_ready", func(l *legacyWorkload, w *Workload) { sim(w).NeverReady = l.SimNeverReady }},
	}
}

// migrateLegacy moves the flat workload keys of src into their runtime
// sub-tables of cfg, recording a warning for each (and an error for a key
// written both ways) in v. It returns whether an undecoded key of the
// first decode is a flat key it handled.
func migrateLegacy(src string, md toml.MetaData, cfg *Config, v *validator) (handled func(toml.Key) bool, err error) {
	var doc legacyDoc
	lmd, err := toml.Decode(src, &doc)
	if err != nil {
		return nil, decodeError(err)
	}
	keys := legacyKeys()
	migrate := func(path []string, l *legacyWorkload, w *Workload) {
		prefix := joinKey(path)
		for _, runtime := range []string{RuntimeDocker, RuntimeExec, RuntimeSimulated} {
			if md.IsDefined(slices.Concat(path, []string{runtime})...) {
				v.subtables[prefix+"."+runtime] = true
			}
		}
		for _, k := range keys {
			if !lmd.IsDefined(slices.Concat(path, []string{k.old})...) {
				continue
			}
			newKey := prefix + "." + k.runtime + "." + k.name
			if md.IsDefined(slices.Concat(path, []string{k.runtime, k.name})...) {
				v.addf(prefix+"."+k.old, "is set both here and as %s in [%s.%s]: keep only the one in [%s.%s]",
					k.name, prefix, k.runtime, prefix, k.runtime)
				continue
			}
			k.move(l, w)
			v.legacy[newKey] = prefix + "." + k.old
			v.warns = append(v.warns, Warning{Key: prefix + "." + k.old,
				Message: fmt.Sprintf("is deprecated: move it to [%s.%s] as %s", prefix, k.runtime, k.name)})
		}
	}
	if doc.Switcher.Mining != nil && cfg.Switcher.Mining != nil {
		m := *cfg.Switcher.Mining
		migrate([]string{"switcher", "mining"}, doc.Switcher.Mining, &m)
		cfg.Switcher.Mining = &m
	}
	if cfg.Switcher.Workload != nil {
		names := make([]string, 0, len(doc.Switcher.Workload))
		for name := range doc.Switcher.Workload {
			names = append(names, name)
		}
		sort.Strings(names)
		table := *cfg.Switcher.Workload
		for _, name := range names {
			w, ok := table[name]
			if !ok {
				continue
			}
			l := doc.Switcher.Workload[name]
			migrate([]string{"switcher", "workload", name}, &l, &w)
			table[name] = w
		}
	}
	return func(k toml.Key) bool { return lmd.IsDefined(k...) && isLegacyKey(k, keys) }, nil
}

// isLegacyKey reports whether k is a flat key of a workload table.
func isLegacyKey(k toml.Key, keys []legacyKey) bool {
	var name string
	switch {
	case len(k) == 3 && k[0] == "switcher" && k[1] == "mining":
		name = k[2]
	case len(k) == 4 && k[0] == "switcher" && k[1] == "workload":
		name = k[3]
	default:
		return false
	}
	for _, l := range keys {
		if l.old == name {
			return true
		}
	}
	return false
}

// joinKey writes a key path as messages show keys.
func joinKey(path []string) string { return strings.Join(path, ".") }

// runtimeKey names a runtime key of the workload at key, as the operator
// wrote it: the flat key when the file set it flat, the sub-table key when
// the file has the runtime's sub-table, else (a missing key, no sub-table)
// the flat name.
func (v *validator) runtimeKey(key, runtime, name string) string {
	sub := key + "." + runtime + "." + name
	if old, ok := v.legacy[sub]; ok {
		return old
	}
	if v.subtables[key+"."+runtime] {
		return sub
	}
	for _, k := range legacyKeys() {
		if k.runtime == runtime && k.name == name {
			return key + "." + k.old
		}
	}
	return sub
}
