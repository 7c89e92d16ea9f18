package regtest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// maxTemplateTxs bounds the transactions taken from one template (a
// regtest template in these tests holds a few dozen).
const maxTemplateTxs = 20_000

// witnessMagic starts the witness commitment output script (BIP141):
// OP_RETURN, a 36-byte push, 0xaa21a9ed.
const witnessMagic = "\x6a\x24\xaa\x21\xa9\xed"

// template is one getblocktemplate answer made ready for the Pool.
// Immutable.
type template struct {
	height  int64
	prev    chainhash.Hash
	version uint32
	txs     []*wire.MsgTx // the block's transactions after the coinbase, template order
	segwit  int           // how many of txs carry witnesses
	job     *stratumsim.JobTemplate
}

// newTemplate checks a getblocktemplate answer and builds the job template
// from it: a coinbase paying the whole coinbase value to payScript, with a
// witness commitment computed here from the transactions' wtxids (and
// compared with the node's default_witness_commitment when it sent one),
// and the coinbase's merkle branch over their txids.
func newTemplate(gbt *btcjson.GetBlockTemplateResult, payScript []byte) (*template, error) {
	if gbt == nil {
		return nil, errors.New("regtest: no block template")
	}
	prev, err := chainhash.NewHashFromStr(gbt.PreviousHash)
	if err != nil || len(gbt.PreviousHash) != 2*chainhash.HashSize {
		return nil, fmt.Errorf("regtest: template previousblockhash %q is not a 64-digit hash", gbt.PreviousHash)
	}
	bits, err := strconv.ParseUint(gbt.Bits, 16, 32)
	if err != nil {
		return nil, fmt.Errorf("regtest: template bits %q: %w", gbt.Bits, err)
	}
	if gbt.Height < 1 || gbt.Height > math.MaxInt32 {
		return nil, fmt.Errorf("regtest: template height %d out of range", gbt.Height)
	}
	if gbt.CurTime < 0 || gbt.CurTime > math.MaxUint32 {
		return nil, fmt.Errorf("regtest: template curtime %d out of range", gbt.CurTime)
	}
	if gbt.CoinbaseValue == nil || *gbt.CoinbaseValue < 0 || *gbt.CoinbaseValue > 21e14 {
		return nil, errors.New("regtest: template has no valid coinbasevalue (asked with the coinbasevalue capability)")
	}
	if len(gbt.Transactions) > maxTemplateTxs {
		return nil, fmt.Errorf("regtest: template has %d transactions, more than %d", len(gbt.Transactions), maxTemplateTxs)
	}
	t := &template{height: gbt.Height, prev: *prev, version: uint32(gbt.Version), txs: make([]*wire.MsgTx, len(gbt.Transactions))}
	txids := make([]chainhash.Hash, len(gbt.Transactions))
	wtxids := make([]chainhash.Hash, len(gbt.Transactions)+1) // [0]: the coinbase's, all zero
	for i, gt := range gbt.Transactions {
		raw, err := hex.DecodeString(gt.Data)
		if err != nil {
			return nil, fmt.Errorf("regtest: template transaction %d: hex: %w", i, err)
		}
		tx := new(wire.MsgTx)
		r := bytes.NewReader(raw)
		if err := tx.Deserialize(r); err != nil {
			return nil, fmt.Errorf("regtest: template transaction %d: %w", i, err)
		}
		if r.Len() != 0 {
			return nil, fmt.Errorf("regtest: template transaction %d: %d bytes after the transaction", i, r.Len())
		}
		txids[i], wtxids[i+1] = tx.TxHash(), tx.WitnessHash()
		if gt.TxID != "" && gt.TxID != txids[i].String() {
			return nil, fmt.Errorf("regtest: template transaction %d: txid %s, data hashes to %s", i, gt.TxID, txids[i])
		}
		if gt.Hash != "" && gt.Hash != wtxids[i+1].String() {
			return nil, fmt.Errorf("regtest: template transaction %d: hash %s, data hashes to wtxid %s", i, gt.Hash, wtxids[i+1])
		}
		if tx.HasWitness() {
			t.segwit++
		}
		t.txs[i] = tx
	}
	commitment := witnessCommitmentScript(wtxids)
	// bitcoind sends the whole output script, btcd only the 32-byte
	// commitment after the magic bytes.
	if nc := gbt.DefaultWitnessCommitment; nc != "" && nc != hex.EncodeToString(commitment) && nc != hex.EncodeToString(commitment[len(witnessMagic):]) {
		return nil, fmt.Errorf("regtest: node's witness commitment %s differs from %x computed from its transactions", nc, commitment)
	}
	t.job = &stratumsim.JobTemplate{
		PrevHash: *prev,
		Height:   uint32(gbt.Height),
		Version:  uint32(gbt.Version),
		NBits:    uint32(bits),
		NTime:    uint32(gbt.CurTime),
		CoinbaseOutputs: []*wire.TxOut{
			{Value: *gbt.CoinbaseValue, PkScript: append([]byte(nil), payScript...)},
			{Value: 0, PkScript: commitment},
		},
		Branch: coinbaseBranch(txids),
		Source: t,
	}
	return t, nil
}

// block assembles the block a share solved: the header the pool hashed,
// its coinbase with the witness reserved value (32 zero bytes) as the
// coinbase witness, which btcd's submitblock does not add, and the
// template's transactions.
func (t *template) block(sh *stratumsim.Share) (*wire.MsgBlock, error) {
	var hdr wire.BlockHeader
	if err := hdr.Deserialize(bytes.NewReader(sh.Header[:])); err != nil {
		return nil, fmt.Errorf("regtest: share header: %w", err)
	}
	cb := new(wire.MsgTx)
	r := bytes.NewReader(sh.Coinbase)
	if err := cb.DeserializeNoWitness(r); err != nil || r.Len() != 0 || len(cb.TxIn) != 1 {
		return nil, fmt.Errorf("regtest: share coinbase %x is not one transaction with one input (%v)", sh.Coinbase, err)
	}
	cb.TxIn[0].Witness = wire.TxWitness{make([]byte, chainhash.HashSize)}
	b := &wire.MsgBlock{Header: hdr, Transactions: make([]*wire.MsgTx, 0, 1+len(t.txs))}
	b.Transactions = append(b.Transactions, cb)
	b.Transactions = append(b.Transactions, t.txs...)
	return b, nil
}

// witnessCommitmentScript returns the BIP141 commitment output script for
// a block whose wtxids (the coinbase's first, as all zeros) are given, with
// the all-zero witness reserved value.
func witnessCommitmentScript(wtxids []chainhash.Hash) []byte {
	root := merkleRoot(wtxids)
	var pre [64]byte
	copy(pre[:32], root[:]) // reserved value pre[32:]: zeros
	c := chainhash.DoubleHashH(pre[:])
	return append([]byte(witnessMagic), c[:]...)
}

// merkleRoot is Bitcoin's merkle root of hashes (the last of an odd level
// paired with itself).
func merkleRoot(hashes []chainhash.Hash) chainhash.Hash {
	if len(hashes) == 0 {
		return chainhash.Hash{}
	}
	level := append([]chainhash.Hash(nil), hashes...)
	for len(level) > 1 {
		next := level[:0]
		for i := 0; i < len(level); i += 2 {
			right := level[i]
			if i+1 < len(level) {
				right = level[i+1]
			}
			next = append(next, hashPair(level[i], right))
		}
		level = next
	}
	return level[0]
}

// coinbaseBranch returns the merkle branch of the first leaf (the
// coinbase) of a tree whose other leaves are txids: at each level, the
// sibling of the coinbase's ancestor.
func coinbaseBranch(txids []chainhash.Hash) []chainhash.Hash {
	var branch []chainhash.Hash
	// rest is the level without its first node (the coinbase's ancestor).
	rest := txids
	for len(rest) > 0 {
		branch = append(branch, rest[0])
		next := make([]chainhash.Hash, 0, len(rest)/2)
		for i := 1; i < len(rest); i += 2 {
			right := rest[i]
			if i+1 < len(rest) {
				right = rest[i+1]
			}
			next = append(next, hashPair(rest[i], right))
		}
		rest = next
	}
	return branch
}

func hashPair(a, b chainhash.Hash) chainhash.Hash {
	var buf [64]byte
	copy(buf[:32], a[:])
	copy(buf[32:], b[:])
	return chainhash.DoubleHashH(buf[:])
}
