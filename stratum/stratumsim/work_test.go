package stratumsim

import (
	"bufio"
	"encoding/hex"
	"errors"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chainhash/v2"
)

func reverseHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(b)
	return b
}

// TestMainnetHeader checks the miner's header construction and the Stratum
// prevhash encoding against mainnet block 125552.
func TestMainnetHeader(t *testing.T) {
	const (
		prevExplorer = "00000000000008a3a41b85b8b29ad444def299fee21793cd8b9e567eab02cd81"
		rootExplorer = "2b12fcf1b09288fcaff797d71e950e71ae42b91e8bdb2304758dfcffc2b620e3"
		hashExplorer = "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"
	)
	// Stratum prevhash: explorer hex cut into eight 8-digit groups, group
	// order reversed (field notes §4).
	var groups []string
	for i := 0; i < 64; i += 8 {
		groups = append(groups, prevExplorer[i:i+8])
	}
	slices.Reverse(groups)
	stratumPrev := strings.Join(groups, "")

	prev, err := decodePrevHash(stratumPrev)
	if err != nil {
		t.Fatal(err)
	}
	if want := reverseHex(t, prevExplorer); !slices.Equal(prev[:], want) {
		t.Fatalf("decodePrevHash = %x, want %x", prev, want)
	}
	if got := encodePrevHash(prev); got != stratumPrev {
		t.Fatalf("encodePrevHash = %s, want %s", got, stratumPrev)
	}
	var root [32]byte
	copy(root[:], reverseHex(t, rootExplorer))
	hdr := buildHeader(1, &prev, &root, 1305998791, 0x1a44b9f2, 2504433986)
	h := sha256d(hdr[:])
	if got := chainhash.Hash(h).String(); got != hashExplorer {
		t.Fatalf("block hash %s, want %s", got, hashExplorer)
	}
	if got := newNonceHasher(hdr).hash(2504433986); got != h {
		t.Fatalf("midstate hash %x, want %x", got, h)
	}
	if !meetsTarget(&h, new32(targetBytes(blockchain.CompactToBig(0x1a44b9f2)))) {
		t.Fatal("block hash does not meet its own nbits")
	}
}

func new32(b [32]byte) *[32]byte { return &b }

func TestDifficultyTarget(t *testing.T) {
	if DifficultyTarget(1).Cmp(diff1()) != 0 {
		t.Fatal("target(1) != diff1")
	}
	if got := DifficultyTarget(0.5); got.Cmp(new(big.Int).Lsh(diff1(), 1)) != 0 {
		t.Fatalf("target(0.5) = %x", got)
	}
	if DifficultyTarget(1e-12).Cmp(maxTarget()) != 0 {
		t.Fatal("tiny difficulty not capped")
	}
	var h chainhash.Hash // zero hash: infinite difficulty
	if !math.IsInf(HashDifficulty(h), 1) {
		t.Fatal("zero hash difficulty")
	}
	// A hash exactly at the diff-1 target has difficulty 1.
	tb := targetBytes(diff1())
	slices.Reverse(tb[:])
	if d := HashDifficulty(chainhash.Hash(tb)); math.Abs(d-1) > 1e-12 {
		t.Fatalf("difficulty at diff1 target = %v", d)
	}
}

func TestBits(t *testing.T) {
	tests := []struct{ v, mask, want uint32 }{
		{0, 0x1fffe000, 0},
		{1, 0x1fffe000, 0x00002000},
		{3, 0x1fffe000, 0x00006000},
		{0xffff, 0x1fffe000, 0x1fffe000},
		{0x5, 0x00000f0f, 0x00000005},
		{0x10, 0x00000f0f, 0x00000100},
	}
	for _, tc := range tests {
		if got := spreadBits(tc.v, tc.mask); got != tc.want {
			t.Errorf("spreadBits(%x, %08x) = %08x, want %08x", tc.v, tc.mask, got, tc.want)
		}
	}
	for _, mask := range []uint32{0, 0x1fffe000, 0x1fffffff, 0xffffffff} {
		ob := outsideBit(mask)
		if mask == 0xffffffff {
			if ob != 0 {
				t.Errorf("outsideBit(all) = %08x", ob)
			}
			continue
		}
		if ob == 0 || ob&mask != 0 || ob&(ob-1) != 0 {
			t.Errorf("outsideBit(%08x) = %08x", mask, ob)
		}
	}
}

func TestClaimExtranonce2(t *testing.T) {
	tests := []struct {
		claim uint64
		size  int
		e2    string
		off   uint32
	}{
		{5, 8, "0000000000000005", 0},
		{0x1ff, 1, "ff", 1},
		{0x10203, 2, "0203", 1},
		{7, 0, "", 7},
		{1, 10, "00000000000000000001", 0},
	}
	for _, tc := range tests {
		e2, off := claimExtranonce2(tc.claim, tc.size)
		if hex.EncodeToString(e2) != tc.e2 || off != tc.off {
			t.Errorf("claim %x size %d = %x+%d, want %s+%d", tc.claim, tc.size, e2, off, tc.e2, tc.off)
		}
	}
}

func TestLineReader(t *testing.T) {
	in := "a\r\nbb\n" + strings.Repeat("x", 100) + "\n" + strings.Repeat("y", 300) + "\nlast"
	lr := &lineReader{r: bufio.NewReaderSize(strings.NewReader(in), 16), max: 200}
	for _, want := range []string{"a", "bb", strings.Repeat("x", 100)} {
		got, err := lr.next()
		if err != nil || string(got) != want {
			t.Fatalf("next = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := lr.next(); !errors.Is(err, errLineTooLong) {
		t.Fatalf("long line: %v", err)
	}
}

func TestCoinbaseTemplate(t *testing.T) {
	var payout [20]byte
	var commit [32]byte
	cb := newCoinbaseTemplate(900_000, 42, payout, commit)
	b1 := cb.coinb1(12)
	// version(4) in-count(1) prevout(36) script-len(1) height push(4)
	if len(b1) != 46 || b1[41] != byte(4+12+cb.tagLen) || b1[42] != 3 {
		t.Fatalf("coinb1 %x", b1)
	}
	if !strings.Contains(string(cb.coinb2), poolTag) {
		t.Fatal("tag missing")
	}
}
