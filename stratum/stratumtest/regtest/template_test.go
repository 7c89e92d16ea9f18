package regtest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"
	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// testTxs returns n signed transactions of the test key, alternately
// spending a (made-up) P2PKH and P2WPKH output, every third one both.
func testTxs(t testing.TB, n int) []*wire.MsgTx {
	t.Helper()
	k := TestKey()
	var out []*wire.MsgTx
	for i := range n {
		tx := wire.NewMsgTx(2)
		var prev []*wire.TxOut
		scripts := [][]byte{k.LegacyScript}
		switch {
		case i%3 == 2:
			scripts = append(scripts, k.SegwitScript)
		case i%2 == 1:
			scripts = [][]byte{k.SegwitScript}
		}
		for j, s := range scripts {
			tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{byte(i), byte(j), 0xee}, Index: uint32(j)}, nil, nil))
			prev = append(prev, wire.NewTxOut(int64(100_000+i), s))
		}
		tx.AddTxOut(wire.NewTxOut(50_000, k.SegwitScript))
		if err := k.sign(tx, prev); err != nil {
			t.Fatal(err)
		}
		out = append(out, tx)
	}
	return out
}

// testGBT is a getblocktemplate answer carrying txs, in btcd's shape.
func testGBT(t testing.TB, txs []*wire.MsgTx) *btcjson.GetBlockTemplateResult {
	t.Helper()
	value := int64(5_000_000_000)
	g := &btcjson.GetBlockTemplateResult{
		Bits: "207fffff", CurTime: 1_760_000_000, Height: 433, Version: 0x20400000,
		PreviousHash: strings.Repeat("0a", 32), CoinbaseValue: &value,
	}
	wtxids := []chainhash.Hash{{}}
	for _, tx := range txs {
		var buf bytes.Buffer
		if err := tx.Serialize(&buf); err != nil {
			t.Fatal(err)
		}
		g.Transactions = append(g.Transactions, btcjson.GetBlockTemplateResultTx{
			Data: hex.EncodeToString(buf.Bytes()), TxID: tx.TxHash().String(), Hash: tx.WitnessHash().String(),
		})
		wtxids = append(wtxids, tx.WitnessHash())
	}
	c := witnessCommitmentScript(wtxids)
	g.DefaultWitnessCommitment = hex.EncodeToString(c[len(witnessMagic):]) // btcd sends the bare commitment
	return g
}

// TestKeySignVerifies: every input the key signs passes btcd's script
// engine with the standard flags (legacy, segwit and mixed spends).
func TestKeySignVerifies(t *testing.T) {
	for i, tx := range testTxs(t, 6) {
		k := TestKey()
		fetch := txscript.NewMultiPrevOutFetcher(nil)
		prev := make([]*wire.TxOut, len(tx.TxIn))
		for j, in := range tx.TxIn {
			s := k.LegacyScript
			if len(in.Witness) > 0 {
				s = k.SegwitScript
			}
			prev[j] = wire.NewTxOut(int64(100_000+i), s)
			fetch.AddPrevOut(in.PreviousOutPoint, prev[j])
		}
		hashes := txscript.NewTxSigHashes(tx, fetch)
		for j := range tx.TxIn {
			vm, err := txscript.NewEngine(prev[j].PkScript, tx, j, txscript.StandardVerifyFlags, nil, hashes, prev[j].Value, fetch)
			if err == nil {
				err = vm.Execute()
			}
			if err != nil {
				t.Errorf("tx %d input %d: %v", i, j, err)
			}
		}
	}
	if err := TestKey().sign(wire.NewMsgTx(2), []*wire.TxOut{{}}); err == nil {
		t.Error("sign with more previous outputs than inputs succeeded")
	}
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, nil))
	if err := TestKey().sign(tx, []*wire.TxOut{{PkScript: []byte{txscript.OP_TRUE}}}); err == nil {
		t.Error("sign of a script not the key's succeeded")
	}
}

// TestMerkleAgainstBtcd: the coinbase branch folded from the coinbase
// txid, and the witness root, equal btcd's own merkle roots for 0 to 20
// transactions after the coinbase.
func TestMerkleAgainstBtcd(t *testing.T) {
	all := testTxs(t, 20)
	cb := wire.NewMsgTx(2)
	cb.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: ^uint32(0)}, []byte{1, 2, 3}, nil))
	cb.AddTxOut(wire.NewTxOut(1, TestKey().SegwitScript))
	for n := 0; n <= len(all); n++ {
		txs := append([]*wire.MsgTx{cb}, all[:n]...)
		var utxs []*btcutil.Tx
		var txids []chainhash.Hash
		wtxids := []chainhash.Hash{{}}
		for i, tx := range txs {
			utxs = append(utxs, btcutil.NewTx(tx))
			if i > 0 {
				txids = append(txids, tx.TxHash())
				wtxids = append(wtxids, tx.WitnessHash())
			}
		}
		root := cb.TxHash()
		for _, b := range coinbaseBranch(txids) {
			root = hashPair(root, b)
		}
		if want := blockchain.CalcMerkleRoot(utxs, false); root != want {
			t.Errorf("%d txs: branch folds to %s, btcd's root is %s", n, root, want)
		}
		if got, want := merkleRoot(wtxids), blockchain.CalcMerkleRoot(utxs, true); got != want {
			t.Errorf("%d txs: witness root %s, btcd's %s", n, got, want)
		}
	}
}

// shareFor builds the share record a stratumtest.Pool would make for a job
// on tmpl: a coinbase with tmpl's outputs and a header over it.
func shareFor(t testing.TB, tmpl *stratumtest.JobTemplate) *stratumtest.Share {
	t.Helper()
	cb := wire.NewMsgTx(2)
	cb.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: ^uint32(0)}, []byte{2, 0xb1, 0x01, 0xde, 0xad, 0xbe, 0xef}, nil))
	cb.TxOut = tmpl.CoinbaseOutputs
	var buf bytes.Buffer
	if err := cb.SerializeNoWitness(&buf); err != nil {
		t.Fatal(err)
	}
	root := cb.TxHash()
	for _, b := range tmpl.Branch {
		root = hashPair(root, b)
	}
	hdr := wire.BlockHeader{Version: int32(tmpl.Version), PrevBlock: tmpl.PrevHash, MerkleRoot: root, Bits: tmpl.NBits}
	var hb bytes.Buffer
	if err := hdr.Serialize(&hb); err != nil {
		t.Fatal(err)
	}
	sh := &stratumtest.Share{Coinbase: buf.Bytes(), Template: tmpl, Accepted: true, BlockCandidate: true}
	copy(sh.Header[:], hb.Bytes())
	return sh
}

// TestTemplateBlock: a block assembled from a template and a share has the
// coinbase witness reserved value, a witness commitment btcd's own check
// accepts, the share's merkle root and the template's transactions; it
// pays the whole coinbase value to the key.
func TestTemplateBlock(t *testing.T) {
	for _, n := range []int{0, 1, 7, 30} {
		txs := testTxs(t, n)
		tmpl, err := newTemplate(testGBT(t, txs), TestKey().SegwitScript)
		if err != nil {
			t.Fatal(err)
		}
		if tmpl.job.Source != tmpl || tmpl.height != 433 || tmpl.job.NBits != 0x207fffff || tmpl.job.Version != 0x20400000 {
			t.Fatalf("template %+v", tmpl.job)
		}
		blk, err := tmpl.block(shareFor(t, tmpl.job))
		if err != nil {
			t.Fatal(err)
		}
		b := btcutil.NewBlock(blk)
		if err := blockchain.ValidateWitnessCommitment(b); err != nil {
			t.Errorf("%d txs: witness commitment: %v", n, err)
		}
		if got := blockchain.CalcMerkleRoot(b.Transactions(), false); got != blk.Header.MerkleRoot {
			t.Errorf("%d txs: merkle root %s, header says %s", n, got, blk.Header.MerkleRoot)
		}
		cb := blk.Transactions[0]
		if len(blk.Transactions) != n+1 || len(cb.TxIn[0].Witness) != 1 || !bytes.Equal(cb.TxIn[0].Witness[0], make([]byte, 32)) ||
			cb.TxOut[0].Value != 5_000_000_000 || !bytes.Equal(cb.TxOut[0].PkScript, TestKey().SegwitScript) {
			t.Errorf("%d txs: block has %d txs, coinbase witness %x, outputs %+v", n, len(blk.Transactions), cb.TxIn[0].Witness, cb.TxOut[0])
		}
	}
	bad := shareFor(t, testTemplateJob(t))
	bad.Coinbase = bad.Coinbase[:10]
	if tmpl, _ := newTemplate(testGBT(t, nil), TestKey().SegwitScript); tmpl != nil {
		if _, err := tmpl.block(bad); err == nil {
			t.Error("a truncated coinbase assembled into a block")
		}
	}
}

func testTemplateJob(t testing.TB) *stratumtest.JobTemplate {
	tmpl, err := newTemplate(testGBT(t, testTxs(t, 2)), TestKey().SegwitScript)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl.job
}

// TestNewTemplateRefuses: answers that do not describe a block are refused
// with a reason, and both commitment formats (btcd's bare hash, bitcoind's
// whole script) are taken.
func TestNewTemplateRefuses(t *testing.T) {
	txs := testTxs(t, 3)
	tests := []struct {
		name   string
		change func(g *btcjson.GetBlockTemplateResult)
		want   string // "" for success
	}{
		{"btcd commitment", func(*btcjson.GetBlockTemplateResult) {}, ""},
		{"bitcoind commitment", func(g *btcjson.GetBlockTemplateResult) {
			g.DefaultWitnessCommitment = hex.EncodeToString([]byte(witnessMagic)) + g.DefaultWitnessCommitment
		}, ""},
		{"no commitment", func(g *btcjson.GetBlockTemplateResult) { g.DefaultWitnessCommitment = "" }, ""},
		{"wrong commitment", func(g *btcjson.GetBlockTemplateResult) { g.DefaultWitnessCommitment = strings.Repeat("00", 32) }, "witness commitment"},
		{"short prevhash", func(g *btcjson.GetBlockTemplateResult) { g.PreviousHash = "0a0b" }, "previousblockhash"},
		{"bad bits", func(g *btcjson.GetBlockTemplateResult) { g.Bits = "zz" }, "bits"},
		{"height 0", func(g *btcjson.GetBlockTemplateResult) { g.Height = 0 }, "height"},
		{"negative curtime", func(g *btcjson.GetBlockTemplateResult) { g.CurTime = -1 }, "curtime"},
		{"no coinbasevalue", func(g *btcjson.GetBlockTemplateResult) { g.CoinbaseValue = nil }, "coinbasevalue"},
		{"tx hex", func(g *btcjson.GetBlockTemplateResult) { g.Transactions[1].Data = "xyz" }, "transaction 1: hex"},
		{"tx truncated", func(g *btcjson.GetBlockTemplateResult) { g.Transactions[0].Data = g.Transactions[0].Data[:40] }, "transaction 0"},
		{"tx trailing bytes", func(g *btcjson.GetBlockTemplateResult) { g.Transactions[2].Data += "00" }, "after the transaction"},
		{"txid mismatch", func(g *btcjson.GetBlockTemplateResult) { g.Transactions[2].TxID = strings.Repeat("1", 64) }, "txid"},
		{"wtxid mismatch", func(g *btcjson.GetBlockTemplateResult) { g.Transactions[1].Hash = strings.Repeat("2", 64) }, "wtxid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := testGBT(t, txs)
			tc.change(g)
			_, err := newTemplate(g, TestKey().SegwitScript)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := newTemplate(nil, nil); err == nil {
		t.Error("nil template taken")
	}
}

// FuzzNewTemplate: whatever the node answers, newTemplate returns an error
// or a template whose coinbase branch has one hash per tree level and
// whose coinbase carries the commitment.
func FuzzNewTemplate(f *testing.F) {
	for _, n := range []int{0, 1, 3} {
		b, err := json.Marshal(testGBT(f, testTxs(f, n)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"bits":"207fffff","height":1,"previousblockhash":"` + strings.Repeat("ff", 32) + `","coinbasevalue":0,"transactions":[{"data":"00"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var g btcjson.GetBlockTemplateResult
		if json.Unmarshal(data, &g) != nil {
			return
		}
		tmpl, err := newTemplate(&g, TestKey().SegwitScript)
		if err != nil {
			return
		}
		levels := 0
		for n := len(g.Transactions) + 1; n > 1; n = (n + 1) / 2 {
			levels++
		}
		if len(tmpl.job.Branch) != levels || len(tmpl.txs) != len(g.Transactions) {
			t.Fatalf("%d txs: branch of %d, want %d", len(g.Transactions), len(tmpl.job.Branch), levels)
		}
		cb := wire.NewMsgTx(2)
		cb.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: ^uint32(0)}, []byte{1, 1}, nil))
		cb.TxOut = tmpl.job.CoinbaseOutputs
		if _, ok := blockchain.ExtractWitnessCommitment(btcutil.NewTx(cb)); !ok {
			t.Fatal("coinbase outputs lack the witness commitment")
		}
	})
}
