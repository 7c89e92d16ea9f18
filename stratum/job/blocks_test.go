package job_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/hashgate/proxyd/stratum"
)

// A block fixture is real mainnet data checked in under testdata/blocks:
// the 80-byte header, the coinbase transaction as it appears in the block
// (with its witness for SegWit blocks) and either every txid of the block or
// the coinbase's merkle branch.
type blockFixture struct {
	Source       string   `json:"source"`
	Height       int      `json:"height"`
	Hash         string   `json:"hash"`
	Header       string   `json:"header"`
	Coinbase     string   `json:"coinbase"`
	TxIDs        []string `json:"txids"`
	MerkleBranch []string `json:"merkle_branch"`
}

// blockCase is a fixture turned into what a pool and a miner would have
// exchanged for that block: the notify line's params and a submit line's
// params, each encoded and parsed through the wire format.
type blockCase struct {
	name        string
	header      wire.BlockHeader
	headerBytes []byte
	hash        chainhash.Hash
	notify      stratum.Notify
	extranonce1 []byte
	submit      stratum.Submit
	mask        uint32
}

const rollingMask = 0x1fffe000

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func mustHash(t testing.TB, s string) chainhash.Hash {
	t.Helper()
	var h chainhash.Hash
	copy(h[:], mustHex(t, s))
	return h
}

// merkleBranch returns the coinbase's branch and the block's merkle root
// from all txids, duplicating the last node of an odd level as Bitcoin does.
func merkleBranch(txids []chainhash.Hash) (branch []chainhash.Hash, root chainhash.Hash) {
	level := append([]chainhash.Hash(nil), txids...)
	for len(level) > 1 {
		branch = append(branch, level[1])
		if len(level)%2 == 1 {
			level = append(level, level[len(level)-1])
		}
		next := make([]chainhash.Hash, 0, len(level)/2)
		for i := 0; i < len(level); i += 2 {
			var pair [64]byte
			copy(pair[:32], level[i][:])
			copy(pair[32:], level[i+1][:])
			next = append(next, chainhash.DoubleHashH(pair[:]))
		}
		level = next
	}
	return branch, level[0]
}

func loadBlock(t testing.TB, height int) blockCase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "blocks", strconv.Itoa(height)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var f blockFixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	c := blockCase{name: "block " + strconv.Itoa(height), headerBytes: mustHex(t, f.Header)}
	if err := c.header.Deserialize(bytes.NewReader(c.headerBytes)); err != nil {
		t.Fatal(err)
	}
	want, err := chainhash.NewHashFromStr(f.Hash)
	if err != nil {
		t.Fatal(err)
	}
	c.hash = *want
	if got := c.header.BlockHash(); got != c.hash {
		t.Fatalf("%s: fixture header hashes to %s, not %s", c.name, got, c.hash)
	}

	// The stratum coinbase is the legacy (non-witness) serialization.
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(mustHex(t, f.Coinbase))); err != nil {
		t.Fatal(err)
	}
	var legacy bytes.Buffer
	if err := tx.SerializeNoWitness(&legacy); err != nil {
		t.Fatal(err)
	}
	txid := tx.TxHash()

	var branch []chainhash.Hash
	switch {
	case len(f.TxIDs) > 0:
		ids := make([]chainhash.Hash, len(f.TxIDs))
		for i, s := range f.TxIDs {
			ids[i] = mustHash(t, s)
		}
		if ids[0] != txid {
			t.Fatalf("%s: coinbase txid %s is not the block's first txid %s", c.name, txid, ids[0])
		}
		var root chainhash.Hash
		branch, root = merkleBranch(ids)
		if root != c.header.MerkleRoot {
			t.Fatalf("%s: txids give merkle root %s, header has %s", c.name, root, c.header.MerkleRoot)
		}
	default:
		for _, s := range f.MerkleBranch {
			branch = append(branch, mustHash(t, s))
		}
	}

	// Split the coinbase around 4+4 bytes of its scriptSig, after the BIP34
	// height push: version(4) ‖ input count(1) ‖ prevout(36) ‖ script length
	// (1 byte for these blocks) ‖ scriptSig.
	raw := legacy.Bytes()
	script := tx.TxIn[0].SignatureScript
	if len(script) < 12 || raw[41] != byte(len(script)) || !bytes.Equal(raw[42:42+len(script)], script) {
		t.Fatalf("%s: unexpected coinbase layout", c.name)
	}
	start := 42 + 4
	c.extranonce1 = raw[start : start+4]
	en2 := raw[start+4 : start+8]

	version := uint32(c.header.Version)
	jobVersion := version
	rolled := version & rollingMask
	if rolled != 0 {
		jobVersion = version &^ rollingMask
		c.mask = rollingMask
	}
	ntime := uint32(c.header.Timestamp.Unix())
	n := stratum.Notify{
		JobID:        strconv.FormatInt(int64(f.Height), 16),
		PrevHash:     c.header.PrevBlock,
		Coinb1:       raw[:start],
		Coinb2:       raw[start+8:],
		MerkleBranch: branch,
		Version:      jobVersion,
		NBits:        c.header.Bits,
		NTime:        ntime - 30, // the miner rolled ntime forward a little
		CleanJobs:    true,
	}
	// Through the wire and back, as a pool would send it.
	c.notify = roundTripNotify(t, &n)

	s := stratum.Submit{Worker: []byte("farm.rig1"), JobID: []byte(n.JobID), NTime: ntime, Nonce: c.header.Nonce}
	s.Extranonce2, _ = stratum.MakeExtranonce(en2)
	if rolled != 0 {
		s.VersionBits, s.HasVersionBits = rolled, true
	}
	c.submit = roundTripSubmit(t, &s)
	return c
}

func roundTripNotify(t testing.TB, n *stratum.Notify) stratum.Notify {
	t.Helper()
	line := stratum.AppendNotification(nil, n)
	var m stratum.Message
	if err := stratum.ParseMessage(line, &m); err != nil {
		t.Fatalf("parse %s: %v", line, err)
	}
	var out stratum.Notify
	if err := out.DecodeParams(m.Params); err != nil {
		t.Fatalf("decode %s: %v", line, err)
	}
	return out
}

func roundTripSubmit(t testing.TB, s *stratum.Submit) stratum.Submit {
	t.Helper()
	line := stratum.AppendRequest(nil, stratum.NumberID(4), s)
	var m stratum.Message
	if err := stratum.ParseMessage(line, &m); err != nil {
		t.Fatalf("parse %s: %v", line, err)
	}
	var out stratum.Submit
	if err := out.DecodeParams(m.Params); err != nil {
		t.Fatalf("decode %s: %v", line, err)
	}
	return out
}
