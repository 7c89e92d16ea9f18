package regtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcutil/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// rpcTimeout bounds the node calls made for one block (submit, refill,
// template).
const rpcTimeout = 60 * time.Second

// PoolOptions configures a Pool.
type PoolOptions struct {
	// Stratum configures the stratumsim.Pool. Template is set here;
	// an OnShare given is called before the Pool's own handling.
	Stratum stratumsim.PoolOptions
	// MempoolTxs is how many transactions the source keeps in the node's
	// mempool before each template is taken, so that each block carries
	// about that many; default 30, negative for none (no funding either).
	MempoolTxs int
	// Key is paid by the coinbases and funds the transactions; default
	// TestKey(). The node's --miningaddr must be its segwit address when
	// MempoolTxs >= 0.
	Key *Key
	// Logf, when set, receives a line per block.
	Logf func(format string, args ...any)
}

// Block is the Pool's record of one block it submitted.
type Block struct {
	Hash            chainhash.Hash
	Height          int64
	PrevHash        chainhash.Hash
	SessionID       uint64 // the stratum session the share came on
	Worker          string // worker name as submitted
	Version         uint32 // header version, as the miner rolled it
	TemplateVersion uint32 // the node's template version
	Txs             int    // transactions besides the coinbase
	SegwitTxs       int    // of which carry witnesses
	// Result is "" when the node took the block, else the node's reason
	// or the error that kept it from being submitted.
	Result      string
	SubmittedAt time.Time
	// NextJob is the stratum job seq of the first job on the template
	// taken after it (0 when taking one failed: see Pool.Err).
	NextJob uint64
}

// Accepted reports whether the node took the block (submitblock returned
// null); CheckChain says whether it is on the main chain.
func (b Block) Accepted() bool { return b.Result == "" }

// Rolled reports whether the header's version differs from the template's:
// a miner rolled version bits (BIP310).
func (b Block) Rolled() bool { return b.Version != b.TemplateVersion }

// Pool is a stratumsim.Pool whose jobs come from a btcd regtest node: each
// share that meets the network target is assembled into a block and
// submitted, the mempool is refilled and the next template sent as a clean
// job. The embedded stratumsim.Pool's knobs (SetDifficulty,
// SetExtranonce, ...) work as usual.
type Pool struct {
	*stratumsim.Pool
	rpc    *Client
	key    *Key
	txs    *TxSource // nil with MempoolTxs < 0
	nTxs   int
	logf   func(format string, args ...any)
	ctx    context.Context // ends at Close: aborts node calls in flight
	cancel context.CancelFunc
	ready  chan struct{} // closed once Pool is set

	// submitMu serialises block submission and template refresh (held
	// across their node calls), so each template follows the block before.
	submitMu   sync.Mutex
	baseHeight int64 // height of the tip under the first template

	mu      sync.Mutex // guards the fields below; never held across a node call
	blocks  []Block
	err     error
	changed chan struct{} // closed and replaced when blocks or err change
}

// StartPool mines blocks with the node's generate until segwit is active
// (431 on a fresh chain), funds the transaction source (unless MempoolTxs
// < 0), fills the mempool, takes the first template and starts the stratum
// pool on it.
func StartPool(ctx context.Context, rpc *Client, opts PoolOptions) (*Pool, error) {
	if opts.Key == nil {
		opts.Key = TestKey()
	}
	if opts.MempoolTxs == 0 {
		opts.MempoolTxs = 30
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	p := &Pool{rpc: rpc, key: opts.Key, nTxs: opts.MempoolTxs, logf: opts.Logf, ready: make(chan struct{}), changed: make(chan struct{})}
	// The coinbase always carries a witness commitment and witness, which
	// btcd refuses before segwit is active.
	if err := activateSegwit(ctx, rpc); err != nil {
		return nil, err
	}
	if opts.MempoolTxs > 0 {
		var err error
		if p.txs, err = NewTxSource(ctx, rpc, opts.Key); err != nil {
			return nil, err
		}
	}
	t, err := p.nextTemplate(ctx)
	if err != nil {
		return nil, err
	}
	p.baseHeight = t.height - 1
	user := opts.Stratum.OnShare
	opts.Stratum.Template = t.job
	opts.Stratum.OnShare = func(sh stratumsim.Share) {
		if user != nil {
			user(sh)
		}
		p.onShare(&sh)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	sp, err := stratumsim.StartPool(opts.Stratum)
	if err != nil {
		p.cancel()
		return nil, err
	}
	p.Pool = sp
	close(p.ready)
	return p, nil
}

// nextTemplate refills the mempool and takes a template.
func (p *Pool) nextTemplate(ctx context.Context) (*template, error) {
	if p.txs != nil {
		if _, err := p.txs.Fill(ctx, p.nTxs); err != nil {
			return nil, err
		}
	}
	gbt, err := p.rpc.BlockTemplate(ctx)
	if err != nil {
		return nil, err
	}
	return newTemplate(gbt, p.key.SegwitScript)
}

// Refresh takes a new template now and sends it as a clean job.
func (p *Pool) Refresh(ctx context.Context) (stratumsim.JobInfo, error) {
	p.submitMu.Lock()
	defer p.submitMu.Unlock()
	return p.refreshLocked(ctx)
}

// refreshLocked is Refresh with submitMu held.
func (p *Pool) refreshLocked(ctx context.Context) (stratumsim.JobInfo, error) {
	t, err := p.nextTemplate(ctx)
	if err != nil {
		return stratumsim.JobInfo{}, err
	}
	return p.SetTemplate(t.job, true)
}

// onShare submits the block a share solved and moves the pool to the next
// template. It runs on the share's session goroutine, after the verdict
// went out.
func (p *Pool) onShare(sh *stratumsim.Share) {
	if sh.Template == nil || !sh.Accepted || !sh.BlockCandidate {
		return
	}
	t, ok := sh.Template.Source.(*template)
	if !ok {
		return
	}
	<-p.ready
	p.submitMu.Lock()
	defer p.submitMu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, rpcTimeout)
	defer cancel()
	b := Block{
		Hash: sh.Hash, Height: t.height, PrevHash: t.prev, SessionID: sh.SessionID, Worker: sh.Worker,
		Version: sh.Version, TemplateVersion: t.version, Txs: len(t.txs), SegwitTxs: t.segwit, SubmittedAt: time.Now(),
	}
	blk, err := t.block(sh)
	if err == nil {
		b.Result, err = p.rpc.SubmitBlock(ctx, blk)
	}
	if err != nil {
		b.Result = "not submitted: " + err.Error()
	}
	info, rerr := p.refreshLocked(ctx)
	if rerr != nil {
		rerr = fmt.Errorf("regtest: next template after block %s: %w", b.Hash, rerr)
	}
	b.NextJob = info.Seq
	p.logf("regtest: block %d %s from session %d (%s): version %08x (template %08x), %d txs (%d segwit), result %q, next job %d",
		b.Height, b.Hash, b.SessionID, b.Worker, b.Version, b.TemplateVersion, b.Txs, b.SegwitTxs, b.Result, b.NextJob)
	p.mu.Lock()
	p.blocks = append(p.blocks, b)
	if rerr != nil && p.err == nil {
		p.err = rerr
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Blocks returns the blocks submitted, in order.
func (p *Pool) Blocks() []Block {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Block(nil), p.blocks...)
}

// Err returns the first failure to take a template after a block.
func (p *Pool) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// WaitBlocks waits until n blocks were submitted and returns the n-th, or
// fails at once when taking a template failed.
func (p *Pool) WaitBlocks(ctx context.Context, n int) (Block, error) {
	for {
		p.mu.Lock()
		blocks, err, ch := len(p.blocks), p.err, p.changed
		var b Block
		if blocks >= n && n > 0 {
			b = p.blocks[n-1]
		}
		p.mu.Unlock()
		switch {
		case blocks >= n:
			return b, nil
		case err != nil:
			return Block{}, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Block{}, fmt.Errorf("regtest: waiting for block %d (have %d): %w", n, blocks, ctx.Err())
		}
	}
}

// TxStats returns what the transaction source sent (zero without one).
func (p *Pool) TxStats() TxStats {
	if p.txs == nil {
		return TxStats{}
	}
	return p.txs.Stats()
}

// CheckChain asks the node about every block the Pool submitted and
// returns every problem found, joined: a block the node refused, one not
// on the main chain at its height (getblockhash), a coinbase that does not
// pay the key, a witness commitment btcd's own check refuses, a header
// version that differs from the one the miner hashed; and a tip that is
// not the last block (a block the Pool did not submit, or one missing).
func (p *Pool) CheckChain(ctx context.Context) error {
	blocks := p.Blocks()
	var errs []error
	for _, b := range blocks {
		if !b.Accepted() {
			errs = append(errs, fmt.Errorf("block %d %s: node said %q", b.Height, b.Hash, b.Result))
			continue
		}
		main, err := p.rpc.BlockHash(ctx, b.Height)
		if err != nil {
			errs = append(errs, fmt.Errorf("block %d %s: %w", b.Height, b.Hash, err))
			continue
		}
		if main != b.Hash {
			errs = append(errs, fmt.Errorf("block %d %s is not on the main chain (%s is)", b.Height, b.Hash, main))
			continue
		}
		blk, err := p.rpc.Block(ctx, b.Hash)
		if err != nil {
			errs = append(errs, fmt.Errorf("block %d %s: %w", b.Height, b.Hash, err))
			continue
		}
		cb := blk.Transactions[0]
		switch {
		case len(cb.TxOut) == 0 || !bytes.Equal(cb.TxOut[0].PkScript, p.key.SegwitScript):
			errs = append(errs, fmt.Errorf("block %d %s: coinbase does not pay the test key %s", b.Height, b.Hash, p.key.Segwit))
		case uint32(blk.Header.Version) != b.Version:
			errs = append(errs, fmt.Errorf("block %d %s: node has version %08x, the miner hashed %08x", b.Height, b.Hash, uint32(blk.Header.Version), b.Version))
		case len(blk.Transactions) != 1+b.Txs:
			errs = append(errs, fmt.Errorf("block %d %s: node has %d transactions, the pool sent %d", b.Height, b.Hash, len(blk.Transactions), 1+b.Txs))
		}
		if err := blockchain.ValidateWitnessCommitment(btcutil.NewBlock(blk)); err != nil {
			errs = append(errs, fmt.Errorf("block %d %s: witness commitment: %w", b.Height, b.Hash, err))
		}
		if _, ok := blockchain.ExtractWitnessCommitment(btcutil.NewTx(cb)); !ok {
			errs = append(errs, fmt.Errorf("block %d %s: coinbase has no witness commitment", b.Height, b.Hash))
		}
	}
	accepted := 0
	for _, b := range blocks {
		if b.Accepted() {
			accepted++
		}
	}
	tip, err := p.rpc.BlockCount(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if want := p.baseHeight + int64(accepted); tip != want {
		errs = append(errs, fmt.Errorf("node height %d, want %d (%d before the pool + %d accepted blocks)", tip, want, p.baseHeight, accepted))
	}
	if len(blocks) > 0 {
		best, err := p.rpc.BestBlockHash(ctx)
		if last := blocks[len(blocks)-1]; err == nil && best != last.Hash {
			errs = append(errs, fmt.Errorf("node's best block %s is not the last block submitted %s", best, last.Hash))
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// BaseHeight returns the node's height before the Pool's first template.
func (p *Pool) BaseHeight() int64 { return p.baseHeight }

// Close stops the stratum pool (aborting node calls in flight); the node is
// the caller's to close.
func (p *Pool) Close() error {
	p.cancel()
	return p.Pool.Close()
}
