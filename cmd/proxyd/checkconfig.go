package main

import (
	"fmt"

	"github.com/hashgate/proxyd/internal/config"
)

func checkConfigCmd(args []string, io stdio) int {
	fs := newFlagSet("check-config", "[--config FILE]",
		"Load and validate a config file. Prints a one-line summary and exits 0 when it is valid;\n"+
			"otherwise prints every problem (with key and line) and exits non-zero.", io)
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
		fmt.Fprintf(io.err, "proxyd check-config: %v\n", err)
		return exitConfig
	}
	fmt.Fprintln(io.out, cfg.Summary())
	return exitOK
}
