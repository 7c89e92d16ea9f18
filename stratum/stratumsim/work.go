package stratumsim

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"math/big"
	"strconv"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chainhash/v2"
)

// Protocol constants the Pool and the Miners use by default.
const (
	// DefaultVersionMask is the BIP310 version-rolling mask real pools
	// grant and real firmware requests.
	DefaultVersionMask uint32 = 0x1fffe000
	// DefaultJobVersion is the block version in every Pool job.
	DefaultJobVersion uint32 = 0x20000000
	// DefaultNBits is a realistic mainnet compact target: no share a test
	// can find is a block candidate.
	DefaultNBits uint32 = 0x17027726
	// EasyNBits is the regtest compact target (about 2^255): every share at
	// a test difficulty is a block candidate.
	EasyNBits uint32 = 0x207fffff
	// DefaultDifficulty is the Pool's initial share difficulty. One share
	// at difficulty d takes d·2^32 hashes on average: 1e-5 is about 43,000
	// hashes, a few milliseconds of one core.
	DefaultDifficulty = 1e-5

	// poolTag marks the Pool's coinbase scriptSig; the 8 bytes after it are
	// the job's sequence number (big-endian), which miners report as
	// PoolJobSeq so tests can match a notify to the Pool's job.
	poolTag = "/stratumtest/"
)

// diff1 returns the difficulty-1 target 0xFFFF·2^208.
func diff1() *big.Int {
	return new(big.Int).Lsh(big.NewInt(0xFFFF), 208)
}

// maxTarget returns 2^256-1.
func maxTarget() *big.Int {
	t := new(big.Int).Lsh(big.NewInt(1), 256)
	return t.Sub(t, big.NewInt(1))
}

// DifficultyTarget returns the share target floor(0xFFFF·2^208 / d), capped
// at 2^256-1. A hash H (sha256d read as a little-endian number) meets
// difficulty d when H <= DifficultyTarget(d). d <= 0 or NaN gives the cap.
func DifficultyTarget(d float64) *big.Int {
	if !(d > 0) {
		return maxTarget()
	}
	if math.IsInf(d, 1) {
		return new(big.Int)
	}
	q := new(big.Rat).SetFrac(diff1(), big.NewInt(1))
	q.Quo(q, new(big.Rat).SetFloat64(d))
	t := new(big.Int).Quo(q.Num(), q.Denom())
	if m := maxTarget(); t.Cmp(m) > 0 {
		return m
	}
	return t
}

// HashDifficulty returns the share difficulty diff1/H of a block hash (H is
// the hash read as a little-endian 256-bit number; +Inf for H = 0).
func HashDifficulty(h chainhash.Hash) float64 {
	v := blockchain.HashToBig(&h)
	if v.Sign() == 0 {
		return math.Inf(1)
	}
	f, _ := new(big.Float).Quo(new(big.Float).SetInt(diff1()), new(big.Float).SetInt(v)).Float64()
	return f
}

// targetBytes returns t as 32 big-endian bytes.
func targetBytes(t *big.Int) (out [32]byte) {
	t.FillBytes(out[:])
	return out
}

// meetsTarget reports whether a sha256d output (a little-endian number) is
// <= target (32 big-endian bytes).
func meetsTarget(h, target *[32]byte) bool {
	for i := 0; i < 32; i++ {
		hb, tb := h[31-i], target[i]
		if hb != tb {
			return hb < tb
		}
	}
	return true
}

// encodePrevHash renders internal-order hash bytes in Stratum's prevhash
// encoding: eight 4-byte words, bytes reversed inside each word.
func encodePrevHash(h [32]byte) string {
	w := swapWords(h)
	return hex.EncodeToString(w[:])
}

// decodePrevHash inverts encodePrevHash.
func decodePrevHash(s string) ([32]byte, error) {
	var w [32]byte
	if len(s) != 64 {
		return w, fmt.Errorf("prevhash: %d hex digits, want 64", len(s))
	}
	if _, err := hex.Decode(w[:], []byte(s)); err != nil {
		return w, fmt.Errorf("prevhash: %w", err)
	}
	return swapWords(w), nil
}

func swapWords(h [32]byte) (w [32]byte) {
	for i := 0; i < 32; i += 4 {
		w[i], w[i+1], w[i+2], w[i+3] = h[i+3], h[i+2], h[i+1], h[i]
	}
	return w
}

// parseHex32 parses exactly 8 hex digits as a big-endian uint32.
func parseHex32(s string) (uint32, error) {
	if len(s) != 8 {
		return 0, fmt.Errorf("%q: want 8 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return uint32(v), nil
}

func hex32(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return hex.EncodeToString(b[:])
}

// spreadBits deposits the low bits of v into the set bits of mask, lowest
// first (a software PDEP).
func spreadBits(v, mask uint32) uint32 {
	var out uint32
	for m := mask; m != 0; m &= m - 1 {
		if v&1 != 0 {
			out |= m & -m
		}
		v >>= 1
	}
	return out
}

// outsideBit returns one version bit outside mask, preferring the bits a
// miner could plausibly roll (0x1fffffff), or 0 when mask covers them all.
func outsideBit(mask uint32) uint32 {
	free := 0x1fffffff &^ mask
	if free == 0 {
		free = ^mask
	}
	if free == 0 {
		return 0
	}
	for b := uint32(1 << 31); b != 0; b >>= 1 {
		if free&b != 0 {
			return b
		}
	}
	return 0
}

// coinbaseTemplate is a legacy coinbase transaction split around the
// extranonce region of its scriptSig:
//
//	prefix ‖ varint(len(scriptSig)) ‖ heightPush ‖ E1 ‖ E2 ‖ coinb2
//
// where coinb2 starts with the rest of the scriptSig (the pool tag). It is
// immutable once built.
type coinbaseTemplate struct {
	prefix     []byte // version, input count, null prevout
	heightPush []byte // BIP34 height push
	tagLen     int    // scriptSig bytes after the extranonce region
	coinb2     []byte // tag, sequence, outputs, locktime
}

// newCoinbaseTemplate builds a realistic coinbase: version 2, one input with
// the null prevout, scriptSig = BIP34 height ‖ extranonces ‖ pool tag and
// job sequence, a P2WPKH payout and a witness-commitment OP_RETURN.
func newCoinbaseTemplate(height uint32, seq uint64, payout [20]byte, commitment [32]byte) coinbaseTemplate {
	var outs []byte
	outs = append(outs, 0x02) // two outputs
	outs = binary.LittleEndian.AppendUint64(outs, 312_500_000)
	outs = append(outs, 0x16, 0x00, 0x14) // P2WPKH: OP_0 PUSH20
	outs = append(outs, payout[:]...)
	outs = binary.LittleEndian.AppendUint64(outs, 0)
	outs = append(outs, 0x26, 0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed) // OP_RETURN witness commitment
	outs = append(outs, commitment[:]...)
	return newCoinbase(height, seq, outs)
}

// newCoinbase builds a version 2 coinbase with one input (the null prevout,
// scriptSig = BIP34 height ‖ extranonces ‖ pool tag and job sequence) and
// outputs, the serialized output count and outputs.
func newCoinbase(height uint32, seq uint64, outputs []byte) coinbaseTemplate {
	var c coinbaseTemplate
	c.prefix = append(c.prefix, 0x02, 0x00, 0x00, 0x00) // tx version 2
	c.prefix = append(c.prefix, 0x01)                   // one input
	c.prefix = append(c.prefix, make([]byte, 32)...)    // null prevout hash
	c.prefix = append(c.prefix, 0xff, 0xff, 0xff, 0xff) // prevout index
	c.heightPush = heightPush(height)

	var tag []byte
	tag = append(tag, poolTag...)
	tag = binary.BigEndian.AppendUint64(tag, seq)
	c.tagLen = len(tag)

	b2 := make([]byte, 0, len(tag)+4+len(outputs)+4)
	b2 = append(b2, tag...)
	b2 = append(b2, 0xff, 0xff, 0xff, 0xff) // sequence
	b2 = append(b2, outputs...)
	b2 = append(b2, 0x00, 0x00, 0x00, 0x00) // locktime
	c.coinb2 = b2
	return c
}

// heightPush is BIP34's minimal script-number push of a block height.
func heightPush(height uint32) []byte {
	var num []byte
	for h := height; h > 0; h >>= 8 {
		num = append(num, byte(h))
	}
	if len(num) > 0 && num[len(num)-1]&0x80 != 0 {
		num = append(num, 0)
	}
	return append([]byte{byte(len(num))}, num...)
}

// coinb1 returns the bytes before the extranonce region for an extranonce
// region of extranonceLen bytes (the scriptSig length byte depends on it).
func (c *coinbaseTemplate) coinb1(extranonceLen int) []byte {
	n := len(c.heightPush) + extranonceLen + c.tagLen // < 0xfd: one varint byte
	b := make([]byte, 0, len(c.prefix)+1+len(c.heightPush))
	b = append(b, c.prefix...)
	b = append(b, byte(n))
	return append(b, c.heightPush...)
}

// jobData is a job as a miner sees it in mining.notify. Immutable once
// parsed; a Fleet shares one value among all its miners.
type jobData struct {
	id         string
	prevHash   [32]byte // internal order
	coinb1     []byte
	coinb2     []byte
	branch     [][32]byte
	version    uint32
	nbits      uint32
	ntime      uint32
	clean      bool
	poolSeq    uint64 // from the Pool's coinbase tag, when hasPoolSeq
	hasPoolSeq bool
}

// parseNotify decodes mining.notify params.
func parseNotify(params json.RawMessage) (*jobData, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(params, &raw); err != nil {
		return nil, fmt.Errorf("notify params: %w", err)
	}
	if len(raw) < 9 {
		return nil, fmt.Errorf("notify params: %d elements, want 9", len(raw))
	}
	var s [8]string
	for i, idx := range []int{0, 1, 2, 3, 5, 6, 7} {
		if err := json.Unmarshal(raw[idx], &s[i]); err != nil {
			return nil, fmt.Errorf("notify param %d: %w", idx, err)
		}
	}
	var branchHex []string
	if err := json.Unmarshal(raw[4], &branchHex); err != nil {
		return nil, fmt.Errorf("notify merkle branch: %w", err)
	}
	j := &jobData{id: s[0]}
	var err error
	if j.prevHash, err = decodePrevHash(s[1]); err != nil {
		return nil, err
	}
	if j.coinb1, err = hex.DecodeString(s[2]); err != nil {
		return nil, fmt.Errorf("coinb1: %w", err)
	}
	if j.coinb2, err = hex.DecodeString(s[3]); err != nil {
		return nil, fmt.Errorf("coinb2: %w", err)
	}
	j.branch = make([][32]byte, len(branchHex))
	for i, h := range branchHex {
		if len(h) != 64 {
			return nil, fmt.Errorf("merkle branch %d: %d hex digits", i, len(h))
		}
		if _, err := hex.Decode(j.branch[i][:], []byte(h)); err != nil {
			return nil, fmt.Errorf("merkle branch %d: %w", i, err)
		}
	}
	if j.version, err = parseHex32(s[4]); err != nil {
		return nil, fmt.Errorf("version: %w", err)
	}
	if j.nbits, err = parseHex32(s[5]); err != nil {
		return nil, fmt.Errorf("nbits: %w", err)
	}
	if j.ntime, err = parseHex32(s[6]); err != nil {
		return nil, fmt.Errorf("ntime: %w", err)
	}
	if err := json.Unmarshal(raw[8], &j.clean); err != nil {
		return nil, fmt.Errorf("clean_jobs: %w", err)
	}
	if i := bytes.Index(j.coinb2, []byte(poolTag)); i >= 0 && len(j.coinb2) >= i+len(poolTag)+8 {
		j.poolSeq = binary.BigEndian.Uint64(j.coinb2[i+len(poolTag):])
		j.hasPoolSeq = true
	}
	return j, nil
}

// merkleRoot returns the merkle root for coinbase coinb1‖e1‖e2‖coinb2,
// folding the branch in list order. This is the miner's own construction,
// deliberately separate from the Pool's (which goes through btcd's wire
// types), so each checks the other.
func (j *jobData) merkleRoot(e1, e2 []byte) [32]byte {
	cb := make([]byte, 0, len(j.coinb1)+len(e1)+len(e2)+len(j.coinb2))
	cb = append(cb, j.coinb1...)
	cb = append(cb, e1...)
	cb = append(cb, e2...)
	cb = append(cb, j.coinb2...)
	root := sha256d(cb)
	var buf [64]byte
	for i := range j.branch {
		copy(buf[:32], root[:])
		copy(buf[32:], j.branch[i][:])
		root = sha256d(buf[:])
	}
	return root
}

func sha256d(b []byte) [32]byte {
	f := sha256.Sum256(b)
	return sha256.Sum256(f[:])
}

// buildHeader lays out the 80-byte block header.
func buildHeader(version uint32, prev, root *[32]byte, ntime, nbits, nonce uint32) (h [80]byte) {
	binary.LittleEndian.PutUint32(h[0:], version)
	copy(h[4:36], prev[:])
	copy(h[36:68], root[:])
	binary.LittleEndian.PutUint32(h[68:], ntime)
	binary.LittleEndian.PutUint32(h[72:], nbits)
	binary.LittleEndian.PutUint32(h[76:], nonce)
	return h
}

// nonceHasher computes sha256d of a header for successive nonces using a
// SHA-256 midstate of the header's constant first 64 bytes. It is owned by
// one goroutine.
type nonceHasher struct {
	hdr   [80]byte
	mid   []byte // marshalled SHA-256 state after hdr[:64]
	d     hash.Hash
	um    encoding.BinaryUnmarshaler
	first [32]byte
}

func newNonceHasher(hdr [80]byte) *nonceHasher {
	d := sha256.New()
	d.Write(hdr[:64])
	mid, err := d.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("stratumsim: sha256 midstate: %v", err))
	}
	return &nonceHasher{hdr: hdr, mid: mid, d: d, um: d.(encoding.BinaryUnmarshaler)}
}

// hash returns sha256d(header with nonce).
func (n *nonceHasher) hash(nonce uint32) [32]byte {
	binary.LittleEndian.PutUint32(n.hdr[76:], nonce)
	if err := n.um.UnmarshalBinary(n.mid); err != nil {
		panic(fmt.Sprintf("stratumsim: sha256 midstate: %v", err))
	}
	n.d.Write(n.hdr[64:])
	n.d.Sum(n.first[:0])
	return sha256.Sum256(n.first[:])
}
