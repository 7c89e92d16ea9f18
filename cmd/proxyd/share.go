package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hashgate/proxyd/stratum/job"
	"github.com/hashgate/proxyd/stratum/share"
)

const shareVerifyDescription = `Check one share exactly as the proxy validates it, when a pool and a miner
disagree about it. Reads one JSON object on stdin:

  {"notify": [mining.notify params],
   "extranonce1": "the miner's extranonce1, hex",
   "submit": [mining.submit params],
   "version_mask": "1fffe000" or null,
   "difficulty": 8192}

and prints one JSON object on stdout:

  {"valid": true|false, "reason": "" or e.g. "low_difficulty",
   "block_hash": "...", "share_difficulty": 12345.6, "header": "80-byte hex",
   "merkle_root": "...", "block_candidate": false}

Exit status: 0 valid share, 1 rejected share (why on stderr), 2 unusable input
(a JSON {"error": ...} on stdout and the problem on stderr).`

func shareCmd(args []string, io stdio) int {
	fs := newFlagSet("share", "verify [flags] < share.json",
		"Work with single shares. Verbs:\n\n  verify   check one share read as JSON on stdin (see 'proxyd share verify --help')", io)
	if done, code := fs.parse(args, io); done {
		return code
	}
	switch fs.Arg(0) {
	case "verify":
		return shareVerifyCmd(fs.Args()[1:], io)
	case "":
		fmt.Fprintln(io.err, "proxyd share: missing verb (want: verify)")
	default:
		fmt.Fprintf(io.err, "proxyd share: unknown verb %q (want: verify)\n", fs.Arg(0))
	}
	fmt.Fprintln(io.err)
	fs.printUsage(io.err)
	return exitUsage
}

func shareVerifyCmd(args []string, io stdio) int {
	fs := newFlagSet("share verify", "[--ntime-window 2h] < share.json", shareVerifyDescription, io)
	window := fs.Duration("ntime-window", job.DefaultNtimeWindow, "accept a share's ntime up to this `duration` past the job's ntime")
	if done, code := fs.parse(args, io); done {
		return code
	}
	if fs.NArg() > 0 {
		return shareUnusable(io, fmt.Errorf("unexpected argument %q: the share is read from stdin", fs.Arg(0)))
	}
	if *window <= 0 {
		return shareUnusable(io, fmt.Errorf("--ntime-window must be positive, got %v", *window))
	}
	req, err := share.Read(io.in)
	if err != nil {
		return shareUnusable(io, err)
	}
	rep, err := share.Verify(req, share.Options{NtimeWindow: *window})
	if err != nil {
		return shareUnusable(io, err)
	}
	out, err := json.Marshal(rep)
	if err != nil { // cannot happen: every field is a string, bool or finite float
		return shareUnusable(io, err)
	}
	fmt.Fprintf(io.out, "%s\n", out)
	if !rep.Valid {
		fmt.Fprintf(io.err, "proxyd share verify: rejected (%s): %s\n", rep.Reason, rep.Detail)
		return exitFailure
	}
	return exitOK
}

// shareUnusable reports input that cannot be judged: JSON on stdout for
// scripts, a sentence on stderr for people.
func shareUnusable(io stdio, err error) int {
	msg := strings.TrimSpace(err.Error())
	out, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	fmt.Fprintf(io.out, "%s\n", out)
	fmt.Fprintf(io.err, "proxyd share verify: %s\n", msg)
	return exitUsage
}
