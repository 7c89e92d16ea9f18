package stratumsim

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// testTemplate is a template with a P2WPKH payout, a commitment-shaped
// second output and a two-hash branch.
func testTemplate(prev byte, nbits uint32) *JobTemplate {
	payout := append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0x11}, 20)...)
	commit := append([]byte{0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed}, bytes.Repeat([]byte{0x22}, 32)...)
	return &JobTemplate{
		PrevHash:        chainhash.Hash{prev, 1, 2, 3},
		Height:          321,
		Version:         0x20000000,
		NBits:           nbits,
		NTime:           1_700_000_000,
		CoinbaseOutputs: []*wire.TxOut{{Value: 5_000_000_000, PkScript: payout}, {Value: 0, PkScript: commit}},
		Branch:          []chainhash.Hash{{0xaa}, {0xbb}},
		Source:          "template source",
	}
}

// TestPoolJobTemplate: jobs on a JobTemplate carry its block, and the share
// record has the coinbase and template a provider needs to build the block.
// A block candidate is accepted even below the session's difficulty; with
// a real network target the usual 23 stands.
func TestPoolJobTemplate(t *testing.T) {
	tests := []struct {
		name      string
		nbits     uint32
		below     bool // the miner hashes at 1/1000 of the pool's difficulty
		code      int
		candidate bool
	}{
		{"share at difficulty, easy target", EasyNBits, false, 0, true},
		{"share below difficulty, easy target", EasyNBits, true, 0, true},
		{"share at difficulty, mainnet target", DefaultNBits, false, 0, false},
		{"share below difficulty, mainnet target", DefaultNBits, true, CodeLowDifficulty, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := testTemplate(7, tc.nbits)
			pool := newTestPool(t, PoolOptions{Template: tmpl})
			m := NewMiner(t, pool.Addr(), MinerOptions{Style: StyleAntminer})
			ctx := testCtx(t)
			if tc.below {
				// The miner alone is told a lower difficulty: the pool
				// still checks the job at testDiff.
				if err := m.WaitJob(ctx); err != nil {
					t.Fatal(err)
				}
				pool.SendTo(pool.Sessions()[0].ID, "mining.set_difficulty", []any{testDiff / 1000})
				seq := pool.NewJob(false).Seq
				if err := m.WaitPoolJob(ctx, seq); err != nil {
					t.Fatal(err)
				}
			}
			// A share at 1/1000 of the difficulty meets it once in 1000
			// tries: keep the first that does not.
			var r SubmitResult
			for {
				var err error
				if r, err = m.SubmitOne(ctx); err != nil {
					t.Fatal(err)
				}
				if !tc.below || r.ShareDifficulty < testDiff {
					break
				}
			}
			if r.Code != tc.code {
				t.Fatalf("code %d (%s), want %d", r.Code, r.Message, tc.code)
			}
			shares := pool.Shares()
			sh := shares[len(shares)-1]
			if sh.BlockCandidate != tc.candidate || sh.Template != tmpl || sh.Template.Source != "template source" {
				t.Fatalf("candidate %v template %p, want %v %p", sh.BlockCandidate, sh.Template, tc.candidate, tmpl)
			}
			var cb wire.MsgTx
			if err := cb.DeserializeNoWitness(bytes.NewReader(sh.Coinbase)); err != nil {
				t.Fatalf("coinbase %x: %v", sh.Coinbase, err)
			}
			if len(cb.TxOut) != 2 || cb.TxOut[0].Value != 5_000_000_000 || !bytes.Equal(cb.TxOut[1].PkScript, tmpl.CoinbaseOutputs[1].PkScript) {
				t.Fatalf("coinbase outputs %+v", cb.TxOut)
			}
			if !bytes.HasPrefix(cb.TxIn[0].SignatureScript, []byte{2, 0x41, 0x01}) || !strings.Contains(string(cb.TxIn[0].SignatureScript), poolTag) {
				t.Fatalf("coinbase scriptSig %x lacks the height 321 push or the pool tag", cb.TxIn[0].SignatureScript)
			}
			var hdr wire.BlockHeader
			if err := hdr.Deserialize(bytes.NewReader(sh.Header[:])); err != nil {
				t.Fatal(err)
			}
			root := cb.TxHash()
			for _, b := range tmpl.Branch {
				root = chainhash.DoubleHashH(slices.Concat(root[:], b[:]))
			}
			switch {
			case hdr.PrevBlock != tmpl.PrevHash:
				t.Errorf("header prevhash %s, want %s", hdr.PrevBlock, tmpl.PrevHash)
			case hdr.MerkleRoot != root:
				t.Errorf("header merkle root %s, want %s from the coinbase and branch", hdr.MerkleRoot, root)
			case hdr.Bits != tc.nbits || uint32(hdr.Version)&^DefaultVersionMask != tmpl.Version:
				t.Errorf("header bits %08x version %08x", hdr.Bits, hdr.Version)
			case hdr.Timestamp.Unix() < int64(tmpl.NTime):
				t.Errorf("header time %v before the template's", hdr.Timestamp)
			}
		})
	}
}

// TestPoolSetTemplate: a new template with clean=true reaches the miner
// and makes shares on the old one stale; bad templates are refused.
func TestPoolSetTemplate(t *testing.T) {
	pool := newTestPool(t, PoolOptions{Template: testTemplate(1, EasyNBits)})
	m := NewMiner(t, pool.Addr(), MinerOptions{Style: StyleBitaxe})
	ctx := testCtx(t)
	if err := m.WaitJob(ctx); err != nil {
		t.Fatal(err)
	}
	old, _ := m.CurrentJob()
	next := testTemplate(2, EasyNBits)
	info, err := pool.SetTemplate(next, true)
	if err != nil {
		t.Fatal(err)
	}
	if info.PrevHash != next.PrevHash.String() || !info.Clean {
		t.Fatalf("job %+v not on the new template", info)
	}
	if err := m.WaitPoolJob(ctx, info.Seq); err != nil {
		t.Fatal(err)
	}
	r, err := m.SubmitOne(ctx)
	if err != nil || r.Verdict != VerdictAccepted {
		t.Fatalf("share on the new template: %v %+v", err, r)
	}
	sub, err := m.Submit(ctx, SubmitRequest{Kind: ShareStale, JobID: old.ID})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := sub.Wait(ctx); r.Code != CodeJobNotFound {
		t.Fatalf("share on the replaced template: code %d, want %d", r.Code, CodeJobNotFound)
	}
	if sh := pool.AcceptedShares(); len(sh) != 1 || sh[0].Template != next {
		t.Fatalf("accepted shares %+v", sh)
	}

	bad := []*JobTemplate{nil, {}, {CoinbaseOutputs: make([]*wire.TxOut, 17)}, {CoinbaseOutputs: []*wire.TxOut{nil}}}
	for i, b := range bad {
		if _, err := pool.SetTemplate(b, true); err == nil {
			t.Errorf("bad template %d accepted", i)
		}
		if b != nil {
			if _, err := StartPool(PoolOptions{Template: b}); err == nil {
				t.Errorf("StartPool took bad template %d", i)
			}
		}
	}
	if got := pool.CurrentJob(); got.Seq != info.Seq {
		t.Errorf("a refused template replaced the job: %+v", got)
	}
}
