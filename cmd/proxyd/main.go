// Command proxyd is Hashgate's mining-site gateway daemon: a Stratum V1 farm
// proxy and a GPU workload switcher behind one local HTTP surface.
//
// Every subcommand is a func(args, stdio) int so tests can run them in-process
// and end-to-end against the built binary alike.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit statuses shared by the subcommands.
const (
	exitOK = 0
	// exitFailure: the command ran and failed (a rejected share, a crash at run time).
	exitFailure = 1
	// exitUsage: wrong flags or unusable input.
	exitUsage = 2
	// exitConfig (EX_CONFIG): the config is invalid. The systemd unit does not
	// restart on it: restarting cannot fix a typo.
	exitConfig = 78
)

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

type command struct {
	name    string
	summary string
	run     func(args []string, io stdio) int
}

// commands is the subcommand table, in the order --help lists them.
func commands() []command {
	return []command{
		{"run", "start the daemon (Stratum proxy, GPU switcher, local HTTP)", runCmd},
		{"demo", "run a whole simulated site on loopback with the real proxy and API", demoCmd},
		{"check-config", "validate a config file and print a one-line summary", checkConfigCmd},
		{"gpus", "list this node's GPUs with telemetry and health (--json for scripts)", gpusCmd},
		{"share", "verify one share (JSON on stdin) as the proxy would", shareCmd},
		{"version", "print version, commit and Go version", versionCmd},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}))
}

func dispatch(args []string, io stdio) int {
	if len(args) == 0 {
		usage(io.err)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(io.out)
		return exitOK
	case "-v", "--version":
		return versionCmd(nil, io)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], io)
		}
	}
	fmt.Fprintf(io.err, "proxyd: unknown command %q\n\n", args[0])
	usage(io.err)
	return exitUsage
}

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("proxyd: Stratum V1 farm proxy and GPU workload switcher for a mining site's gateway.\n\n")
	b.WriteString("Usage:\n  proxyd <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-14s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'proxyd <command> --help' for a command's flags.\n")
	io.WriteString(w, b.String())
}
