package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Miner processes: the tool re-executes itself with workerEnv set; the
// child runs one localGroup and answers requests on stdin/stdout with
// encoding/gob, one response per request, in order. Every process has its
// own file-descriptor limit, so splitting miners over processes is how the
// tool runs more miners than one process may hold connections.
const (
	workerEnv      = "PROXYLOAD_MINER_PROCESS"
	workerEnvValue = "1"
)

// Requests a miner process understands.
const (
	opStart = "start" // must come first, with Spec
	opPoll  = "poll"
	opRate  = "rate"
	opTake  = "take"
	opClose = "close" // the last request; the process exits after answering
)

type workerRequest struct {
	Op   string
	Spec groupSpec
	Rate float64
	Full bool // poll: include the fleet's counters
}

type workerResponse struct {
	Err    string
	Status groupStatus
	Take   groupTake
	Final  groupFinal
}

// workerMain is a miner process's main: it serves requests until opClose
// or until stdin closes (the tool went away), then closes its miners. It
// ignores SIGINT: the tool, which may share the terminal's process group,
// decides when miners stop.
func workerMain(stdin io.Reader, stdout, stderr io.Writer) int {
	signal.Ignore(os.Interrupt)
	clock, err := newMonoClock()
	if err != nil {
		fmt.Fprintf(stderr, "miner process: %v\n", err)
		return 1
	}
	dec := gob.NewDecoder(bufio.NewReader(stdin))
	bw := bufio.NewWriter(stdout)
	enc := gob.NewEncoder(bw)
	reply := func(r workerResponse) error {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("miner process: write response: %w", err)
		}
		return bw.Flush()
	}
	var g *localGroup
	defer func() {
		if g != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = g.close(ctx)
		}
	}()
	ctx := context.Background()
	for {
		var req workerRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			fmt.Fprintf(stderr, "miner process: read request: %v\n", err)
			return 1
		}
		var resp workerResponse
		switch {
		case req.Op == opStart && g == nil:
			g = startLocal(req.Spec, clock)
		case g == nil:
			resp.Err = fmt.Sprintf("request %q before %q", req.Op, opStart)
		case req.Op == opPoll:
			resp.Status, err = g.poll(ctx, req.Full)
		case req.Op == opRate:
			err = g.setRate(ctx, req.Rate)
		case req.Op == opTake:
			resp.Take, err = g.take(ctx)
		case req.Op == opClose:
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			resp.Final, err = g.close(cctx)
			cancel()
			g = nil
			resp.Final.CPUSeconds, resp.Final.MaxRSSKiB = selfUsage()
		default:
			resp.Err = fmt.Sprintf("unknown request %q", req.Op)
		}
		if err != nil {
			resp.Err = err.Error()
			err = nil
		}
		if werr := reply(resp); werr != nil {
			fmt.Fprintln(stderr, werr)
			return 1
		}
		if req.Op == opClose {
			return 0
		}
	}
}

// remoteGroup is a group in a miner process. Calls are serialised; a call
// that outlives its ctx kills the process.
type remoteGroup struct {
	index int
	cmd   *exec.Cmd
	stdin io.WriteCloser
	bw    *bufio.Writer
	enc   *gob.Encoder
	dec   *gob.Decoder
	tail  *tailWriter
	exit  chan struct{} // closed when the process has exited
	mu    sync.Mutex    // one call at a time
	err   error         // sticky: the process is unusable
	wait  error         // cmd.Wait's result, valid once exit is closed
}

// startRemote starts a miner process for spec from the executable exe
// (normally this tool's own binary) and sends it the start request.
// Lines it writes to stderr are copied to logw with a prefix.
func startRemote(ctx context.Context, exe string, spec groupSpec, logw io.Writer) (*remoteGroup, error) {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+workerEnvValue)
	// Own process group: a Ctrl-C at the terminal reaches only the tool,
	// which then closes its miner processes; Pdeathsig covers a tool that
	// dies without doing so.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r := &remoteGroup{index: spec.Index, cmd: cmd, exit: make(chan struct{})}
	r.tail = newTailWriter(8<<10, logw, fmt.Sprintf("miner process %d: ", spec.Index))
	cmd.Stderr = r.tail
	var err error
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("miner process %d: %w", spec.Index, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("miner process %d: %w", spec.Index, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start miner process %d (%s): %w", spec.Index, exe, err)
	}
	go func() {
		r.wait = cmd.Wait()
		close(r.exit)
	}()
	r.bw = bufio.NewWriter(r.stdin)
	r.enc = gob.NewEncoder(r.bw)
	r.dec = gob.NewDecoder(bufio.NewReader(stdout))
	if _, err := r.call(ctx, workerRequest{Op: opStart, Spec: spec}); err != nil {
		r.kill()
		return nil, err
	}
	return r, nil
}

// call sends one request and waits for its response, bounded by ctx.
func (r *remoteGroup) call(ctx context.Context, req workerRequest) (workerResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return workerResponse{}, r.err
	}
	type result struct {
		resp workerResponse
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var res result
		if err := r.enc.Encode(req); err != nil {
			res.err = err
		} else if err := r.bw.Flush(); err != nil {
			res.err = err
		} else {
			res.err = r.dec.Decode(&res.resp)
		}
		ch <- res
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			r.err = r.failure(fmt.Sprintf("%s request", req.Op), res.err)
			r.kill()
			return workerResponse{}, r.err
		}
		if res.resp.Err != "" {
			return res.resp, fmt.Errorf("miner process %d: %s: %s", r.index, req.Op, res.resp.Err)
		}
		return res.resp, nil
	case <-ctx.Done():
		r.err = r.failure(fmt.Sprintf("%s request", req.Op), ctx.Err())
		r.kill()
		return workerResponse{}, r.err
	}
}

// failure describes a broken miner process, with its exit status and the
// end of its stderr when it has exited.
func (r *remoteGroup) failure(what string, err error) error {
	select {
	case <-r.exit:
		return fmt.Errorf("miner process %d: %s: %w (process ended: %v; stderr: %s)", r.index, what, err, r.wait, r.tail.String())
	case <-time.After(200 * time.Millisecond):
		return fmt.Errorf("miner process %d: %s: %w", r.index, what, err)
	}
}

// kill ends the process and waits (briefly) for it.
func (r *remoteGroup) kill() {
	_ = r.cmd.Process.Kill()
	select {
	case <-r.exit:
	case <-time.After(5 * time.Second):
	}
}

func (r *remoteGroup) poll(ctx context.Context, full bool) (groupStatus, error) {
	resp, err := r.call(ctx, workerRequest{Op: opPoll, Full: full})
	return resp.Status, err
}

func (r *remoteGroup) setRate(ctx context.Context, perMinute float64) error {
	_, err := r.call(ctx, workerRequest{Op: opRate, Rate: perMinute})
	return err
}

func (r *remoteGroup) take(ctx context.Context) (groupTake, error) {
	resp, err := r.call(ctx, workerRequest{Op: opTake})
	return resp.Take, err
}

// close asks the process to close its miners, collects its last records
// and waits for it to exit (killing it when ctx ends first).
func (r *remoteGroup) close(ctx context.Context) (groupFinal, error) {
	resp, err := r.call(ctx, workerRequest{Op: opClose})
	_ = r.stdin.Close()
	select {
	case <-r.exit:
	case <-ctx.Done():
		r.kill()
	}
	return resp.Final, err
}

// tailWriter keeps the last max bytes written to it and copies each
// complete line to out (when not nil) with a prefix. Safe for concurrent
// use.
type tailWriter struct {
	mu     sync.Mutex
	max    int
	buf    []byte
	line   []byte
	out    io.Writer
	prefix string
}

func newTailWriter(max int, out io.Writer, prefix string) *tailWriter {
	return &tailWriter{max: max, out: out, prefix: prefix}
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	if t.out != nil {
		t.line = append(t.line, p...)
		for {
			i := bytes.IndexByte(t.line, '\n')
			if i < 0 {
				break
			}
			fmt.Fprintf(t.out, "%s%s\n", t.prefix, t.line[:i])
			t.line = t.line[i+1:]
		}
		if len(t.line) > t.max {
			t.line = t.line[:0]
		}
	}
	return len(p), nil
}

// String returns the kept tail, trimmed.
func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return "(empty)"
	}
	return s
}
