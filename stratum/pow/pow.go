// Package pow is Bitcoin proof-of-work arithmetic for a share-validating
// proxy: 256-bit targets, pool difficulty ("bdiff", difficulty 1 =
// 0xFFFF·2^208) and the comparisons between a block hash and either.
//
// Hashes are chainhash.Hash values in internal byte order, read as
// little-endian 256-bit numbers, as Bitcoin compares them. The comparisons
// MeetsDifficulty and Target.Accepts are exact and allocation-free; they run
// for every share. Conversions to and from big.Int use
// blockchain.CompactToBig and are meant for setup, not per share.
package pow

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chainhash/v2"
)

// Target is a 256-bit unsigned target: a hash meets it when hash <= target.
// The zero value is the zero target, which only the zero hash meets.
type Target struct {
	w [4]uint64 // little-endian limbs: w[0] is the least significant
}

// diff1Hi is the top limb of difficulty 1's target, 0xFFFF·2^208.
const diff1Hi = 0xFFFF << 16

// diff1Float is 0xFFFF·2^208 as a float64 (exact).
const diff1Float = 0xFFFF * (1 << 208)

// Diff1 returns the difficulty-1 target 0xFFFF·2^208 (0x00000000FFFF0000…).
func Diff1() Target { return Target{w: [4]uint64{0, 0, 0, diff1Hi}} }

// MaxTarget returns 2^256-1, which every hash meets.
func MaxTarget() Target { return Target{w: [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}} }

func hashLimbs(h *chainhash.Hash) [4]uint64 {
	return [4]uint64{
		binary.LittleEndian.Uint64(h[0:8]),
		binary.LittleEndian.Uint64(h[8:16]),
		binary.LittleEndian.Uint64(h[16:24]),
		binary.LittleEndian.Uint64(h[24:32]),
	}
}

// TargetFromHash reads a hash as a 256-bit number.
func TargetFromHash(h *chainhash.Hash) Target { return Target{w: hashLimbs(h)} }

// Accepts reports whether h <= t.
func (t Target) Accepts(h *chainhash.Hash) bool {
	return cmp4(hashLimbs(h), t.w) <= 0
}

// Cmp compares t and u as numbers: -1, 0 or +1.
func (t Target) Cmp(u Target) int { return cmp4(t.w, u.w) }

// IsZero reports whether t is zero.
func (t Target) IsZero() bool { return t.w == [4]uint64{} }

func cmp4(a, b [4]uint64) int {
	for i := 3; i >= 0; i-- {
		switch {
		case a[i] < b[i]:
			return -1
		case a[i] > b[i]:
			return 1
		}
	}
	return 0
}

func limbsFloat(w [4]uint64) float64 {
	return float64(w[3])*0x1p192 + float64(w[2])*0x1p128 + float64(w[1])*0x1p64 + float64(w[0])
}

// Difficulty returns the pool difficulty of t: diff1 / t. The zero target
// has infinite difficulty.
func (t Target) Difficulty() float64 {
	if t.IsZero() {
		return math.Inf(1)
	}
	return diff1Float / limbsFloat(t.w)
}

// HashDifficulty returns the difficulty a hash achieves, diff1 / hash, the
// number pools report as a share's difficulty. The zero hash gives +Inf.
func HashDifficulty(h *chainhash.Hash) float64 {
	t := TargetFromHash(h)
	return t.Difficulty()
}

// MeetsDifficulty reports exactly whether h <= diff1 / d, i.e. whether a
// share with hash h counts at pool difficulty d. It is the integer
// comparison h·d <= diff1 carried out on d's exact binary value, with no
// rounding and no allocation. Every hash meets a difficulty <= 0; none meets
// NaN; only the zero hash meets +Inf.
func MeetsDifficulty(h *chainhash.Hash, d float64) bool {
	switch {
	case d <= 0:
		return true
	case d != d:
		return false
	case math.IsInf(d, 1):
		return *h == chainhash.Hash{}
	}
	frac, exp := math.Frexp(d) // d = frac·2^exp, frac in [0.5, 1)
	m := uint64(frac * (1 << 53))
	e := exp - 53 // d = m·2^e exactly, m < 2^53
	// h·m·2^e <= 0xFFFF·2^208  ⇔  h·m <= 0xFFFF·2^s with s = 208 - e.
	s := 208 - e
	if s < 0 {
		// d > 2^261: beyond any real difficulty; the big path is exact.
		return bigMeets(h, d)
	}
	hl := hashLimbs(h)
	var p [6]uint64 // p = h·m, at most 309 bits
	var carry uint64
	for i := 0; i < 4; i++ {
		hi, lo := bits.Mul64(hl[i], m)
		var c uint64
		p[i], c = bits.Add64(lo, carry, 0)
		carry = hi + c
	}
	p[4] = carry
	if s >= 320 {
		return true // 0xFFFF·2^s >= 2^320 > p
	}
	var r [6]uint64 // r = 0xFFFF·2^s
	limb, shift := s/64, uint(s%64)
	r[limb] = 0xFFFF << shift
	if shift > 48 {
		r[limb+1] = 0xFFFF >> (64 - shift)
	}
	for i := 5; i >= 0; i-- {
		switch {
		case p[i] < r[i]:
			return true
		case p[i] > r[i]:
			return false
		}
	}
	return true
}

func bigMeets(h *chainhash.Hash, d float64) bool {
	hv := new(big.Float).SetInt(blockchain.HashToBig(h))
	lhs := new(big.Float).SetPrec(2048).Mul(hv, big.NewFloat(d))
	rhs := new(big.Float).SetPrec(2048).SetInt(Diff1().Big())
	return lhs.Cmp(rhs) <= 0
}

// TargetFromDifficulty returns floor(diff1 / d), the largest hash that meets
// difficulty d, so that t.Accepts(h) == MeetsDifficulty(h, d) for every h.
// Difficulties too small for 256 bits give MaxTarget, as does d <= 0; +Inf
// and NaN give the zero target. It allocates: cache the result per
// difficulty rather than calling it per share.
func TargetFromDifficulty(d float64) Target {
	switch {
	case d <= 0:
		return MaxTarget()
	case d != d || math.IsInf(d, 1):
		return Target{}
	}
	frac, exp := math.Frexp(d)
	m := new(big.Int).SetUint64(uint64(frac * (1 << 53)))
	e := exp - 53
	num := Diff1().Big()
	den := m
	if e < 0 {
		num.Lsh(num, uint(-e))
	} else {
		den.Lsh(den, uint(e))
	}
	t, _ := TargetFromBig(num.Quo(num, den))
	return t
}

// ErrInvalidCompact is wrapped by TargetFromCompact's errors: the nbits
// encode a negative, zero or oversized target.
var ErrInvalidCompact = errors.New("invalid compact target")

// TargetFromCompact decodes a block header's nbits with
// blockchain.CompactToBig. Compact values that encode a negative, zero or
// more-than-256-bit target are an error: no real block has them.
func TargetFromCompact(nbits uint32) (Target, error) {
	b := blockchain.CompactToBig(nbits)
	if b.Sign() <= 0 {
		return Target{}, fmt.Errorf("nbits %08x: %w (not positive)", nbits, ErrInvalidCompact)
	}
	t, ok := TargetFromBig(b)
	if !ok {
		return Target{}, fmt.Errorf("nbits %08x: %w (more than 256 bits)", nbits, ErrInvalidCompact)
	}
	return t, nil
}

// TargetFromBig converts a non-negative integer. Values over 256 bits give
// MaxTarget and ok == false; negative values give zero and ok == false.
func TargetFromBig(b *big.Int) (t Target, ok bool) {
	switch {
	case b.Sign() < 0:
		return Target{}, false
	case b.BitLen() > 256:
		return MaxTarget(), false
	}
	var be [32]byte
	b.FillBytes(be[:])
	return TargetFromBytes(be), true
}

// Big returns t as a big.Int.
func (t Target) Big() *big.Int {
	be := t.Bytes()
	return new(big.Int).SetBytes(be[:])
}

// TargetFromBytes reads a big-endian 32-byte target, as mining.suggest_target
// and block explorers write it.
func TargetFromBytes(be [32]byte) Target {
	return Target{w: [4]uint64{
		binary.BigEndian.Uint64(be[24:32]),
		binary.BigEndian.Uint64(be[16:24]),
		binary.BigEndian.Uint64(be[8:16]),
		binary.BigEndian.Uint64(be[0:8]),
	}}
}

// Bytes returns t big-endian.
func (t Target) Bytes() [32]byte {
	var be [32]byte
	binary.BigEndian.PutUint64(be[0:8], t.w[3])
	binary.BigEndian.PutUint64(be[8:16], t.w[2])
	binary.BigEndian.PutUint64(be[16:24], t.w[1])
	binary.BigEndian.PutUint64(be[24:32], t.w[0])
	return be
}

// String returns t as 64 big-endian hex digits.
func (t Target) String() string {
	be := t.Bytes()
	return hex.EncodeToString(be[:])
}
