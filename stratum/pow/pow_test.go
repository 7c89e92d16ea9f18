package pow_test

import (
	"encoding/binary"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum/pow"
)

func diff1Big() *big.Int { return new(big.Int).Lsh(big.NewInt(0xFFFF), 208) }

// exactMeets is the reference: h·d <= diff1 in exact rational arithmetic.
func exactMeets(h *chainhash.Hash, d float64) bool {
	hv := new(big.Rat).SetInt(hashBig(h))
	lhs := new(big.Rat).Mul(hv, new(big.Rat).SetFloat64(d))
	return lhs.Cmp(new(big.Rat).SetInt(diff1Big())) <= 0
}

func hashBig(h *chainhash.Hash) *big.Int {
	var be [32]byte
	for i := range be {
		be[i] = h[31-i]
	}
	return new(big.Int).SetBytes(be[:])
}

func hashFromBig(t *testing.T, b *big.Int) chainhash.Hash {
	t.Helper()
	var be [32]byte
	b.FillBytes(be[:])
	var h chainhash.Hash
	for i := range be {
		h[i] = be[31-i]
	}
	return h
}

func TestTargetFromCompact(t *testing.T) {
	tests := []struct {
		nbits uint32
		want  string
		diff  float64
	}{
		{0x1d00ffff, "00000000ffff0000000000000000000000000000000000000000000000000000", 1},
		{0x17029a8a, "000000000000000000029a8a0000000000000000000000000000000000000000", 0}, // block 881423
		{0x1903a30c, "0000000000000003a30c00000000000000000000000000000000000000000000", 0}, // block 277647
	}
	for _, tt := range tests {
		got, err := pow.TargetFromCompact(tt.nbits)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != tt.want {
			t.Errorf("%08x: %s, want %s", tt.nbits, got, tt.want)
		}
		if tt.diff != 0 && got.Difficulty() != tt.diff {
			t.Errorf("%08x: difficulty %v", tt.nbits, got.Difficulty())
		}
	}
	// Block 881423's network difficulty: 0xFFFF·2^48 / 0x029a8a, about 108.1 T.
	bt, _ := pow.TargetFromCompact(0x17029a8a)
	if d := bt.Difficulty(); math.Abs(d-0xFFFF*math.Exp2(48)/0x029a8a) > 1 {
		t.Errorf("difficulty %g", d)
	}
	for _, bad := range []uint32{0, 0x1d800001, 0x2200ffff} {
		if _, err := pow.TargetFromCompact(bad); err == nil {
			t.Errorf("%08x accepted", bad)
		}
	}
}

func TestDiff1(t *testing.T) {
	d1 := pow.Diff1()
	if d1.Big().Cmp(diff1Big()) != 0 || d1.Difficulty() != 1 {
		t.Fatalf("Diff1 %s", d1)
	}
	if pow.TargetFromDifficulty(1) != d1 {
		t.Fatal("TargetFromDifficulty(1) != Diff1")
	}
	half := new(big.Int).Rsh(diff1Big(), 1)
	if pow.TargetFromDifficulty(2).Big().Cmp(half) != 0 {
		t.Fatal("TargetFromDifficulty(2)")
	}
	if pow.TargetFromDifficulty(0) != pow.MaxTarget() || pow.TargetFromDifficulty(1e-30) != pow.MaxTarget() {
		t.Fatal("tiny difficulties saturate")
	}
	if !pow.TargetFromDifficulty(math.Inf(1)).IsZero() {
		t.Fatal("+Inf difficulty")
	}
}

func TestTargetBytes(t *testing.T) {
	d1 := pow.Diff1()
	if pow.TargetFromBytes(d1.Bytes()) != d1 {
		t.Fatal("bytes round trip")
	}
	b, ok := pow.TargetFromBig(new(big.Int).Lsh(big.NewInt(1), 256))
	if ok || b != pow.MaxTarget() {
		t.Fatal("2^256 must saturate")
	}
	if _, ok := pow.TargetFromBig(big.NewInt(-1)); ok {
		t.Fatal("negative accepted")
	}
	if pow.Diff1().Cmp(pow.MaxTarget()) != -1 || pow.MaxTarget().Cmp(pow.Diff1()) != 1 || pow.Diff1().Cmp(pow.Diff1()) != 0 {
		t.Fatal("Cmp")
	}
}

// TestMeetsDifficultyBoundary: a hash equal to floor(diff1/d) meets d, one
// more does not, for difficulties pools actually send.
func TestMeetsDifficultyBoundary(t *testing.T) {
	for _, d := range []float64{1, 2, 3, 0.5, 1e-9, 16383.75, 8192, 65536, 1e6 + 0.1, 1.2345e12, 110.57e12, 1 << 40, 3e-300, 1e200} {
		target := pow.TargetFromDifficulty(d)
		tb := target.Big()
		at := hashFromBig(t, tb)
		if tb.BitLen() <= 256 && !pow.MeetsDifficulty(&at, d) {
			t.Errorf("d=%g: the target itself does not meet", d)
		}
		next := new(big.Int).Add(tb, big.NewInt(1))
		if next.BitLen() <= 256 {
			above := hashFromBig(t, next)
			if pow.MeetsDifficulty(&above, d) {
				t.Errorf("d=%g: target+1 meets", d)
			}
		}
	}
}

// TestMeetsDifficultyAgrees checks the fast comparison against exact
// rational arithmetic and TargetFromDifficulty on random hashes and
// difficulties, including hashes near the boundary.
func TestMeetsDifficultyAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		d := math.Exp2(rng.Float64()*120 - 40) // 2^-40 .. 2^80
		if i%7 == 0 {
			d = math.Round(d)
		}
		var h chainhash.Hash
		switch i % 3 {
		case 0: // uniform
			for k := 0; k < 32; k += 8 {
				binary.LittleEndian.PutUint64(h[k:], rng.Uint64())
			}
		case 1: // right at the target, give or take a little
			tb := pow.TargetFromDifficulty(d).Big()
			tb.Add(tb, big.NewInt(int64(rng.IntN(5))-2))
			if tb.Sign() < 0 || tb.BitLen() > 256 {
				continue
			}
			h = hashFromBig(t, tb)
		case 2: // a plausible share hash: leading zero bits
			for k := 0; k < 32; k += 8 {
				binary.LittleEndian.PutUint64(h[k:], rng.Uint64())
			}
			zeros := rng.IntN(100)
			b := hashBig(&h)
			b.Rsh(b, uint(zeros))
			h = hashFromBig(t, b)
		}
		want := exactMeets(&h, d)
		if got := pow.MeetsDifficulty(&h, d); got != want {
			t.Fatalf("MeetsDifficulty(%x, %g) = %v, exact says %v", h, d, got, want)
		}
		target := pow.TargetFromDifficulty(d)
		if got := target.Accepts(&h); got != want {
			t.Fatalf("TargetFromDifficulty(%g).Accepts(%x) = %v, exact says %v", d, h, got, want)
		}
	}
}

func TestMeetsDifficultyEdges(t *testing.T) {
	var zero, ones chainhash.Hash
	for i := range ones {
		ones[i] = 0xff
	}
	tests := []struct {
		h    *chainhash.Hash
		d    float64
		want bool
	}{
		{&ones, 0, true},
		{&ones, -1, true},
		{&ones, math.NaN(), false},
		{&zero, math.Inf(1), true},
		{&ones, math.Inf(1), false},
		{&zero, math.MaxFloat64, true},
		{&ones, math.MaxFloat64, false},
		{&ones, math.SmallestNonzeroFloat64, true},
		{&ones, 1.0 / 65536, true}, // target 2^256 - 2^208... ≥ hash? diff1·65536 = 0xFFFF·2^224 < 2^256-1
	}
	tests[len(tests)-1].want = exactMeets(&ones, 1.0/65536)
	for _, tt := range tests {
		if got := pow.MeetsDifficulty(tt.h, tt.d); got != tt.want {
			t.Errorf("MeetsDifficulty(%x…, %g) = %v", tt.h[31], tt.d, got)
		}
	}
}

func TestHashDifficulty(t *testing.T) {
	// Block 881423's hash.
	h, _ := chainhash.NewHashFromStr("0000000000000000000269d52c24ea451225613aab095d90d771d4e29aa96cdd")
	got := pow.HashDifficulty(h)
	want, _ := new(big.Rat).SetFrac(diff1Big(), hashBig(h)).Float64()
	if math.Abs(got-want)/want > 1e-12 {
		t.Fatalf("HashDifficulty %g, want %g", got, want)
	}
	var zero chainhash.Hash
	if !math.IsInf(pow.HashDifficulty(&zero), 1) {
		t.Fatal("zero hash")
	}
}

func BenchmarkMeetsDifficulty(b *testing.B) {
	h, _ := chainhash.NewHashFromStr("0000000000000000000269d52c24ea451225613aab095d90d771d4e29aa96cdd")
	b.ReportAllocs()
	for b.Loop() {
		if !pow.MeetsDifficulty(h, 16383.75) {
			b.Fatal("no")
		}
	}
}
