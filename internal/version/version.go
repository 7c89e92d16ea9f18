// Package version reports what build of proxyd is running. The linker sets
// Version and Commit (see the Makefile); a plain `go build` reports "dev".
package version

import "runtime"

// Set at link time with -X; never written at run time.
var (
	Version = "dev"
	Commit  = "unknown"
)

// GoVersion is the toolchain that built the binary.
func GoVersion() string { return runtime.Version() }

// String is the one line `proxyd version` prints.
func String() string {
	return "proxyd " + Version + " (commit " + Commit + ", " + GoVersion() + ")"
}
