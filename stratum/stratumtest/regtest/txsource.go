package regtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/btcsuite/btcd/wire/v2"
)

// Funding: fundCoinbases mature coinbases of the test key are each split
// into fundOutputs outputs, alternately legacy and segwit; every later
// transaction spends one or two outputs and makes two, so the supply only
// grows. txFee is far above btcd's minimum relay fee for these sizes.
const (
	fundCoinbases = 4
	fundOutputs   = 50
	fundFee       = 50_000
	txFee         = 5_000
	minSpendable  = 10_000 // smaller outputs are not spent (dust after fees)
	maturity      = 100    // regtest coinbase maturity
	// segwitHeight is the tip from which btcd's regtest takes witness
	// transactions: segwit activates by BIP9 signalling (144-block
	// windows), active for blocks from 432 on, unlike bitcoind's regtest
	// where it is active from genesis.
	segwitHeight = 3*144 - 1
)

// TxStats counts the transactions a TxSource sent, by what they spend.
type TxStats struct {
	Legacy uint64 // one P2PKH input: no witness
	Segwit uint64 // one P2WPKH input
	Mixed  uint64 // one of each: a witness for one input, an empty one for the other
}

// Total returns the transactions sent.
func (s TxStats) Total() uint64 { return s.Legacy + s.Segwit + s.Mixed }

// utxo is an output of the test key that the source may spend.
type utxo struct {
	op  wire.OutPoint
	out *wire.TxOut
}

// TxSource keeps legacy and segwit transactions in a node's mempool, built
// and signed here (no wallet) from the test key's coins, so that block
// templates carry real transactions. Its methods are safe for concurrent
// use; one mutex owns the coin queues and is held across a whole Fill, so
// fills never spend the same coin twice.
type TxSource struct {
	rpc *Client
	key *Key

	mu     sync.Mutex // guards every field below
	legacy []utxo     // P2PKH coins, oldest first
	segwit []utxo     // P2WPKH coins, oldest first
	stats  TxStats
}

// NewTxSource funds a source from the node: it mines blocks with the node's
// generate until segwit is active (431 blocks on a fresh btcd regtest
// chain, which also matures the first coinbases; the node's --miningaddr
// must be key's segwit address), splits the first fundCoinbases coinbases
// into many coins of both kinds and mines one more block to confirm the
// splits.
func NewTxSource(ctx context.Context, rpc *Client, key *Key) (*TxSource, error) {
	s := &TxSource{rpc: rpc, key: key}
	if err := activateSegwit(ctx, rpc); err != nil {
		return nil, err
	}
	var splits []*wire.MsgTx
	for h := int64(1); h <= fundCoinbases; h++ {
		coin, err := s.coinbaseCoin(ctx, h)
		if err != nil {
			return nil, err
		}
		tx, err := s.split(coin)
		if err != nil {
			return nil, err
		}
		if _, err := rpc.SendRawTransaction(ctx, tx); err != nil {
			return nil, fmt.Errorf("regtest: send the split of coinbase %d: %w", h, err)
		}
		splits = append(splits, tx)
	}
	hashes, err := rpc.Generate(ctx, 1)
	if err != nil || len(hashes) != 1 {
		return nil, fmt.Errorf("regtest: mine the splits: %v %w", hashes, err)
	}
	b, err := rpc.Block(ctx, hashes[0])
	if err != nil {
		return nil, err
	}
	if len(b.Transactions) != 1+len(splits) {
		return nil, fmt.Errorf("regtest: block %s has %d transactions, want the coinbase and %d splits", hashes[0], len(b.Transactions), len(splits))
	}
	for _, tx := range splits {
		s.add(tx)
	}
	return s, nil
}

// activateSegwit mines blocks with the node's generate until the tip is at
// segwitHeight, which also matures the first coinbases, and checks that
// the node says segwit is active.
func activateSegwit(ctx context.Context, rpc *Client) error {
	height, err := rpc.BlockCount(ctx)
	if err != nil {
		return err
	}
	if want := int64(max(segwitHeight, maturity+fundCoinbases-1)); height < want {
		if _, err := rpc.Generate(ctx, int(want-height)); err != nil {
			return fmt.Errorf("regtest: mine %d blocks to activate segwit: %w", want-height, err)
		}
		height = want
	}
	if status, err := rpc.SoftForkStatus(ctx, "segwit"); err != nil || status != "active" {
		return fmt.Errorf("regtest: segwit is %q on this node at height %d (%v); blocks with witnesses need it active", status, height, err)
	}
	return nil
}

// coinbaseCoin returns the output of the coinbase at height that pays the
// test key's segwit address.
func (s *TxSource) coinbaseCoin(ctx context.Context, height int64) (utxo, error) {
	hash, err := s.rpc.BlockHash(ctx, height)
	if err != nil {
		return utxo{}, err
	}
	b, err := s.rpc.Block(ctx, hash)
	if err != nil {
		return utxo{}, err
	}
	cb := b.Transactions[0]
	for i, o := range cb.TxOut {
		if bytes.Equal(o.PkScript, s.key.SegwitScript) {
			return utxo{wire.OutPoint{Hash: cb.TxHash(), Index: uint32(i)}, o}, nil
		}
	}
	return utxo{}, fmt.Errorf("regtest: coinbase of block %d (%s) does not pay the test key %s: is btcd's --miningaddr set to it?", height, hash, s.key.Segwit)
}

// split spends one coin into fundOutputs outputs, alternately to the legacy
// and the segwit address.
func (s *TxSource) split(c utxo) (*wire.MsgTx, error) {
	each := (c.out.Value - fundFee) / fundOutputs
	if each < minSpendable {
		return nil, fmt.Errorf("regtest: coin of %d sat is too small to split", c.out.Value)
	}
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&c.op, nil, nil))
	for i := range fundOutputs {
		script := s.key.LegacyScript
		if i%2 == 1 {
			script = s.key.SegwitScript
		}
		tx.AddTxOut(wire.NewTxOut(each, script))
	}
	if err := s.key.sign(tx, []*wire.TxOut{c.out}); err != nil {
		return nil, err
	}
	return tx, nil
}

// add queues tx's outputs as coins; s.mu held or s not yet shared.
func (s *TxSource) add(tx *wire.MsgTx) {
	h := tx.TxHash()
	for i, o := range tx.TxOut {
		if o.Value < minSpendable {
			continue
		}
		c := utxo{wire.OutPoint{Hash: h, Index: uint32(i)}, o}
		if bytes.Equal(o.PkScript, s.key.LegacyScript) {
			s.legacy = append(s.legacy, c)
		} else {
			s.segwit = append(s.segwit, c)
		}
	}
}

// Fill sends transactions until the node's mempool holds at least n, and
// returns how many it sent: in turn legacy, segwit, legacy, segwit, mixed.
func (s *TxSource) Fill(ctx context.Context, n int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	have, err := s.rpc.MempoolSize(ctx)
	if err != nil {
		return 0, err
	}
	sent := 0
	for ; have+sent < n; sent++ {
		if err := s.sendOneLocked(ctx); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// errNoCoins means the source spent everything it had.
var errNoCoins = errors.New("regtest: the transaction source has no coins left to spend")

// sendOneLocked builds, signs and sends the next transaction; s.mu held.
// The coins it spends are taken from the queues only once the node took it.
func (s *TxSource) sendOneLocked(ctx context.Context) error {
	var ins []utxo
	kind := s.stats.Total() % 5
	switch {
	case kind == 4 && len(s.legacy) > 0 && len(s.segwit) > 0:
		ins = []utxo{s.legacy[0], s.segwit[0]}
	case kind%2 == 0 && len(s.legacy) > 0, len(s.segwit) == 0 && len(s.legacy) > 0:
		ins = []utxo{s.legacy[0]}
	case len(s.segwit) > 0:
		ins = []utxo{s.segwit[0]}
	default:
		return errNoCoins
	}
	tx := wire.NewMsgTx(2)
	prev := make([]*wire.TxOut, len(ins))
	var total int64
	for i, c := range ins {
		tx.AddTxIn(wire.NewTxIn(&c.op, nil, nil))
		prev[i] = c.out
		total += c.out.Value
	}
	half := (total - txFee) / 2
	if half < minSpendable {
		return fmt.Errorf("%w (coins down to %d sat)", errNoCoins, total)
	}
	tx.AddTxOut(wire.NewTxOut(half, s.key.LegacyScript))
	tx.AddTxOut(wire.NewTxOut(total-txFee-half, s.key.SegwitScript))
	if err := s.key.sign(tx, prev); err != nil {
		return err
	}
	if _, err := s.rpc.SendRawTransaction(ctx, tx); err != nil {
		return fmt.Errorf("regtest: send a test transaction spending %v: %w", tx.TxIn[0].PreviousOutPoint, err)
	}
	legacyIn, segwitIn := false, false
	for _, c := range ins {
		if bytes.Equal(c.out.PkScript, s.key.LegacyScript) {
			s.legacy, legacyIn = s.legacy[1:], true
		} else {
			s.segwit, segwitIn = s.segwit[1:], true
		}
	}
	switch {
	case legacyIn && segwitIn:
		s.stats.Mixed++
	case legacyIn:
		s.stats.Legacy++
	default:
		s.stats.Segwit++
	}
	s.add(tx)
	return nil
}

// Stats returns the counts of transactions sent.
func (s *TxSource) Stats() TxStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}
