package main

import (
	"fmt"

	"github.com/hashgate/proxyd/internal/version"
)

func versionCmd(args []string, io stdio) int {
	fs := newFlagSet("version", "", "Print proxyd's version, the commit it was built from and the Go version.", io)
	if done, code := fs.parse(args, io); done {
		return code
	}
	fmt.Fprintln(io.out, version.String())
	return exitOK
}
