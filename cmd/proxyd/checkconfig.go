package main

import (
	"fmt"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/internal/redact"
)

func checkConfigCmd(args []string, io stdio) int {
	fs := newFlagSet("check-config", "[--config FILE]",
		"Load and validate a config file with exactly the checks `proxyd run` makes before it starts\n"+
			"(the API token file included). Prints warnings for valid but suspicious values on stderr\n"+
			"and a one-line summary, and exits 0 when `run` would start; otherwise prints every problem\n"+
			"(with key and line) and exits 78.", io)
	path := fs.String("config", config.DefaultPath, "TOML config `file` to check")
	if done, code := fs.parse(args, io); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(io.err, "proxyd check-config: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(io.err, "proxyd check-config: %s\n", redact.String(err.Error()))
		return exitConfig
	}
	// The same preflight daemon.New runs for `proxyd run`.
	pre, err := daemon.Check(cfg)
	if err != nil {
		fmt.Fprintf(io.err, "proxyd check-config: %s\n", redact.String(err.Error()))
		return exitConfig
	}
	for _, w := range pre.Warnings {
		fmt.Fprintf(io.err, "proxyd check-config: warning: %s\n", w)
	}
	summary := cfg.Summary()
	if n := len(pre.Warnings); n > 0 {
		summary += fmt.Sprintf("; %d warning(s) on stderr", n)
	}
	fmt.Fprintln(io.out, summary)
	return exitOK
}
