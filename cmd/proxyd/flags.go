package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// flagSet is a flag.FlagSet whose --help prints a readable page to stdout and
// whose errors go to stderr, each exactly once.
type flagSet struct {
	*flag.FlagSet
	synopsis, description string
}

func newFlagSet(name, synopsis, description string, io stdio) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, description: description}
	fs.SetOutput(io.err)
	fs.Usage = func() {} // printed by parse, once, to the right stream
	return fs
}

func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: proxyd %s %s\n\n%s\n", fs.Name(), fs.synopsis, fs.description)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// parse parses args. It reports done when the caller should return code at
// once: after --help (exit 0) or a flag error (exit 2, with usage on stderr).
func (fs *flagSet) parse(args []string, io stdio) (done bool, code int) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.printUsage(io.out)
		return true, exitOK
	case err != nil:
		fmt.Fprintln(io.err)
		fs.printUsage(io.err)
		return true, exitUsage
	}
	return false, 0
}
