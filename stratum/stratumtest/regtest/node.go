package regtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// NodeOptions configures StartNode.
type NodeOptions struct {
	// Binary is the btcd to run; default FindBtcd's.
	Binary string
	// MiningAddr is btcd's --miningaddr, which the node's generate pays;
	// default TestKey().Segwit.
	MiningAddr string
	// StartTimeout bounds the wait for the node's RPC; default 60s.
	StartTimeout time.Duration
	// Logf, when set, receives a line per start and stop.
	Logf func(format string, args ...any)
}

// Node is a btcd process in regtest mode on 127.0.0.1 with its own
// temporary directory (data, logs and HOME, so nothing is written to the
// user's ~/.btcd). btcd's regtest starts a fresh chain from genesis each
// time. It has no P2P listener and RPC without TLS.
type Node struct {
	rpc     *Client
	addr    string
	user    string
	pass    string
	dir     string
	cmd     *exec.Cmd
	out     *tailBuffer
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // the process's exit; read after exited closes
	logf    func(format string, args ...any)

	closeOnce sync.Once
	closeErr  error
}

// StartNode starts btcd in regtest mode on a free loopback port and waits
// until its RPC answers. Close stops it and removes its directory.
func StartNode(ctx context.Context, opts NodeOptions) (*Node, error) {
	if opts.Binary == "" {
		p, err := FindBtcd()
		if err != nil {
			return nil, fmt.Errorf("%w; install it with: %s", err, InstallHint)
		}
		opts.Binary = p
	}
	if opts.MiningAddr == "" {
		opts.MiningAddr = TestKey().Segwit.EncodeAddress()
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	// The port is free when chosen but not reserved: another process may
	// take it before btcd binds it, so a failed bind is retried.
	var lastErr error
	for range 3 {
		n, err := startNode(ctx, opts)
		if err == nil {
			return n, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func startNode(ctx context.Context, opts NodeOptions) (*Node, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "regtest-btcd-")
	if err != nil {
		return nil, fmt.Errorf("regtest: node directory: %w", err)
	}
	var secret [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("regtest: rpc password: %w", err)
	}
	n := &Node{
		addr:   net.JoinHostPort("127.0.0.1", fmt.Sprint(port)),
		user:   "regtest",
		pass:   hex.EncodeToString(secret[:]),
		dir:    dir,
		out:    &tailBuffer{max: 64 << 10},
		exited: make(chan struct{}),
		logf:   opts.Logf,
	}
	n.rpc = NewClient(n.addr, n.user, n.pass)
	n.cmd = exec.Command(opts.Binary,
		"--regtest",
		"--datadir="+filepath.Join(dir, "data"),
		"--logdir="+filepath.Join(dir, "logs"),
		"--rpclisten="+n.addr,
		"--rpcuser="+n.user,
		"--rpcpass="+n.pass,
		"--notls",
		"--nolisten",
		"--miningaddr="+opts.MiningAddr,
		"--debuglevel=info",
	)
	n.cmd.Env = append(os.Environ(), "HOME="+dir)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("regtest: start %s: %w", opts.Binary, err)
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.exited)
	}()
	if err := n.waitRPC(ctx, opts.StartTimeout); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("regtest: btcd (%s) did not come up: %w; its output:\n%s", opts.Binary, err, n.Output())
	}
	n.logf("regtest: btcd %s up on %s (dir %s)", opts.Binary, n.addr, dir)
	return n, nil
}

// waitRPC polls the node until getblockcount answers, the process exits or
// the timeout passes.
func (n *Node) waitRPC(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := n.rpc.BlockCount(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("btcd exited (%v)", n.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("no RPC answer on %s: %w (last: %w)", n.addr, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("regtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RPC returns the node's RPC client.
func (n *Node) RPC() *Client { return n.rpc }

// Addr returns the RPC address "127.0.0.1:port".
func (n *Node) Addr() string { return n.addr }

// Btcctl returns the btcctl command line that reaches this node, for a
// person inspecting it while it runs.
func (n *Node) Btcctl() string {
	return fmt.Sprintf("btcctl --regtest --notls --rpcserver=%s --rpcuser=%s --rpcpass=%s", n.addr, n.user, n.pass)
}

// Output returns the last 64 KiB btcd wrote to stdout and stderr.
func (n *Node) Output() string { return n.out.String() }

// Close stops btcd (an interrupt, which it handles with a clean shutdown;
// a kill after 30s) and removes its directory. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		select {
		case <-n.exited:
		default:
			_ = n.cmd.Process.Signal(os.Interrupt)
			select {
			case <-n.exited:
			case <-time.After(30 * time.Second):
				_ = n.cmd.Process.Kill()
				<-n.exited
				n.closeErr = errors.New("regtest: btcd ignored the interrupt for 30s and was killed")
			}
		}
		if err := os.RemoveAll(n.dir); err != nil && n.closeErr == nil {
			n.closeErr = fmt.Errorf("regtest: remove the node directory: %w", err)
		}
		n.logf("regtest: btcd on %s stopped (%v)", n.addr, n.waitErr)
	})
	return n.closeErr
}

// tailBuffer keeps the last max bytes written to it. Safe for concurrent
// use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
