package job_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/job"
)

var realBlocks = []int{
	277647, // pre-SegWit, version 2
	540619, // SegWit, version 0x20000000
	881423, // SegWit, version 0x2e596000: rolled bits under 0x1fffe000
}

func (c *blockCase) job(t testing.TB) *job.Job {
	t.Helper()
	j, err := job.New(&c.notify, job.Config{ExtranonceSize: len(c.extranonce1) + c.submit.Extranonce2.Len()})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (c *blockCase) share(difficulty float64) job.Share {
	s := job.Share{Extranonce1: c.extranonce1, VersionMask: c.mask, Difficulty: difficulty}
	s.FromSubmit(&c.submit)
	return s
}

// TestRealBlocks rebuilds real mainnet blocks from the job and submission a
// pool and miner would have exchanged: the header must be byte-identical and
// hash to the real block hash, which is a block candidate.
func TestRealBlocks(t *testing.T) {
	for _, height := range realBlocks {
		c := loadBlock(t, height)
		t.Run(c.name, func(t *testing.T) {
			j := c.job(t)
			s := c.share(65536)
			res := j.Validate(&s)
			if !res.Valid() {
				t.Fatalf("real block rejected: %s", res.Reason)
			}
			hdr := j.Header(s.Extranonce1, s.Extranonce2, s.NTime, s.Nonce, res.Version)
			if !bytes.Equal(hdr[:], c.headerBytes) {
				t.Errorf("header\n got %x\nwant %x", hdr, c.headerBytes)
			}
			if res.Hash != c.hash {
				t.Errorf("hash %s, want %s", res.Hash, c.hash)
			}
			if !res.BlockCandidate {
				t.Error("a real block is not a block candidate")
			}
			if got := j.MerkleRoot(s.Extranonce1, s.Extranonce2); got != c.header.MerkleRoot {
				t.Errorf("merkle root %s, want %s", got, c.header.MerkleRoot)
			}
			// The same header through btcd's own type and hash.
			bh := j.BlockHeader(s.Extranonce1, s.Extranonce2, s.NTime, s.Nonce, res.Version)
			var buf bytes.Buffer
			if err := bh.Serialize(&buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), c.headerBytes) || bh.BlockHash() != c.hash {
				t.Errorf("wire.BlockHeader serializes to %x", buf.Bytes())
			}
			if res.Difficulty < 1e9 {
				t.Errorf("share difficulty %g is implausibly low for a block", res.Difficulty)
			}
		})
	}
}

// TestRealBlockRejections spoils one field of a real block's share at a time.
func TestRealBlockRejections(t *testing.T) {
	for _, height := range realBlocks {
		c := loadBlock(t, height)
		t.Run(c.name, func(t *testing.T) {
			cases := []struct {
				name   string
				spoil  func(s *job.Share)
				reason job.Reason
			}{
				{"wrong nonce", func(s *job.Share) { s.Nonce++ }, job.ReasonLowDifficulty},
				{"wrong extranonce2", func(s *job.Share) {
					en2 := append([]byte(nil), s.Extranonce2...)
					en2[0] ^= 1
					s.Extranonce2 = en2
				}, job.ReasonLowDifficulty},
				{"wrong extranonce1", func(s *job.Share) {
					en1 := append([]byte(nil), s.Extranonce1...)
					en1[3] ^= 0x80
					s.Extranonce1 = en1
				}, job.ReasonLowDifficulty},
				{"wrong ntime", func(s *job.Share) { s.NTime++ }, job.ReasonLowDifficulty},
				{"short extranonce2", func(s *job.Share) { s.Extranonce2 = s.Extranonce2[:3] }, job.ReasonBadExtranonceSize},
				{"ntime before job", func(s *job.Share) { s.NTime = c.notify.NTime - 1 }, job.ReasonBadNtime},
				{"ntime past window", func(s *job.Share) { s.NTime = c.notify.NTime + 7201 }, job.ReasonBadNtime},
				{"ntime past narrow window", func(s *job.Share) { s.NtimeWindow = 10 * time.Second }, job.ReasonBadNtime},
				{"version bit outside mask", func(s *job.Share) {
					s.HasVersionBits = true
					s.VersionBits |= 0x00000001
					s.VersionMask = rollingMask
				}, job.ReasonVersionBitsOutsideMask},
				{"version bits without a mask", func(s *job.Share) {
					s.HasVersionBits = true
					s.VersionBits |= 0x00002000
					s.VersionMask = 0
				}, job.ReasonVersionBitsOutsideMask},
			}
			if c.mask != 0 {
				cases = append(cases,
					struct {
						name   string
						spoil  func(s *job.Share)
						reason job.Reason
					}{"rolled bits outside a narrower mask are rejected, not masked away", func(s *job.Share) {
						s.VersionMask = 0x00ffe000
					}, job.ReasonVersionBitsOutsideMask},
					struct {
						name   string
						spoil  func(s *job.Share)
						reason job.Reason
					}{"rolled bits dropped", func(s *job.Share) { s.HasVersionBits = false }, job.ReasonLowDifficulty},
				)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					j := c.job(t)
					s := c.share(1e6)
					tc.spoil(&s)
					res := j.Validate(&s)
					if res.Reason != tc.reason {
						t.Fatalf("reason %q, want %q", res.Reason, tc.reason)
					}
					if res.BlockCandidate || (res.Hashed && res.Hash == c.hash) {
						t.Fatal("spoiled share still hashes to the block")
					}
				})
			}
		})
	}
}

func TestDuplicate(t *testing.T) {
	c := loadBlock(t, 881423)
	j := c.job(t)
	s := c.share(1)
	if res := j.Validate(&s); !res.Valid() {
		t.Fatalf("first submission: %s", res.Reason)
	}
	if res := j.Validate(&s); res.Reason != job.ReasonDuplicate {
		t.Fatalf("second submission: %q, want duplicate", res.Reason)
	}
	// Another miner (another extranonce1) with the same extranonce2, ntime
	// and nonce submits a different share.
	other := s
	other.Extranonce1 = []byte{1, 2, 3, 4}
	other.Difficulty = 1e-12 // every hash counts
	if res := j.Validate(&other); !res.Valid() {
		t.Fatalf("other miner's share: %s", res.Reason)
	}
	// The same share against a fresh job of the same notify is not a
	// duplicate: tracking is per job.
	if res := c.job(t).Validate(&s); !res.Valid() {
		t.Fatalf("fresh job: %s", res.Reason)
	}
	if n := j.SharesSeen(); n != 2 {
		t.Fatalf("SharesSeen %d, want 2", n)
	}
}

func TestDuplicateTrackingIsBounded(t *testing.T) {
	c := loadBlock(t, 881423)
	j, err := job.New(&c.notify, job.Config{MaxShares: 8})
	if err != nil {
		t.Fatal(err)
	}
	s := c.share(1e-12) // every hash counts
	first := s
	if res := j.Validate(&first); !res.Valid() {
		t.Fatal(res.Reason)
	}
	for i := range 20 {
		s.Nonce = uint32(i)
		if res := j.Validate(&s); !res.Valid() {
			t.Fatalf("nonce %d: %s", i, res.Reason)
		}
		if n := j.SharesSeen(); n > 8 {
			t.Fatalf("tracker holds %d shares, cap is 8", n)
		}
	}
	// The oldest share was forgotten.
	if res := j.Validate(&first); !res.Valid() {
		t.Fatalf("evicted share: %s", res.Reason)
	}
}

func TestValidateConcurrent(t *testing.T) {
	c := loadBlock(t, 540619)
	j := c.job(t)
	var wg sync.WaitGroup
	accepted := make([]int, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := c.share(1e-12)
			for i := range 200 {
				s.Nonce = uint32(i) // the same 200 shares from every goroutine
				if res := j.Validate(&s); res.Valid() {
					accepted[g]++
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range accepted {
		total += n
	}
	if total != 200 {
		t.Fatalf("%d shares accepted across goroutines, want each of 200 exactly once", total)
	}
}

// A block candidate is never dropped, even below the miner's difficulty.
func TestBlockCandidateBeatsShareDifficulty(t *testing.T) {
	c := loadBlock(t, 277647)
	j := c.job(t)
	s := c.share(1e30)
	res := j.Validate(&s)
	if !res.Valid() || !res.BlockCandidate {
		t.Fatalf("block with absurd share difficulty: reason %q candidate %v", res.Reason, res.BlockCandidate)
	}
}

func TestMergeVersion(t *testing.T) {
	tests := []struct {
		job, bits, mask uint32
		want            uint32
		ok              bool
	}{
		{0x20000000, 0x0e596000, 0x1fffe000, 0x2e596000, true},
		{0x20000000, 0, 0x1fffe000, 0x20000000, true},
		{0x3fffe004, 0x00002000, 0x1fffe000, 0x20002004, true}, // job bits under the mask are replaced
		{0x20000000, 0x00001000, 0x1fffe000, 0, false},
		{0x20000000, 0x20000000, 0x1fffe000, 0, false},
		{0x20000000, 0x00002000, 0, 0, false},
		{0x20000000, 0, 0, 0x20000000, true},
	}
	for _, tt := range tests {
		got, ok := job.MergeVersion(tt.job, tt.bits, tt.mask)
		if got != tt.want || ok != tt.ok {
			t.Errorf("MergeVersion(%08x, %08x, %08x) = %08x, %v; want %08x, %v", tt.job, tt.bits, tt.mask, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNTimeOK(t *testing.T) {
	n := stratum.Notify{JobID: "1", NBits: 0x1d00ffff, NTime: 0xfffff000}
	j, err := job.New(&n, job.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ntime  uint32
		window time.Duration
		ok     bool
	}{
		{0xfffff000, 0, true},
		{0xffffefff, 0, false},
		{0xffffffff, 0, true}, // the window may run past 2106 without wrapping
		{0xfffff000 + 60, time.Minute, true},
		{0xfffff000 + 61, time.Minute, false},
	}
	for _, tt := range tests {
		if got := j.NTimeOK(tt.ntime, tt.window); got != tt.ok {
			t.Errorf("NTimeOK(%08x, %v) = %v, want %v", tt.ntime, tt.window, got, tt.ok)
		}
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		n    stratum.Notify
		cfg  job.Config
		want string
	}{
		{"zero nbits", stratum.Notify{JobID: "a", NBits: 0}, job.Config{}, "invalid compact target"},
		{"negative nbits", stratum.Notify{JobID: "a", NBits: 0x1d80ffff}, job.Config{}, "invalid compact target"},
		{"oversized nbits", stratum.Notify{JobID: "a", NBits: 0x2200ffff}, job.Config{}, "invalid compact target"},
		{"huge coinbase", stratum.Notify{JobID: "a", NBits: 0x1d00ffff, Coinb1: make([]byte, 70000)}, job.Config{}, "coinbase of 70000 bytes"},
		{"bad extranonce size", stratum.Notify{JobID: "a", NBits: 0x1d00ffff}, job.Config{ExtranonceSize: 100}, "extranonce size 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := job.New(&tt.n, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestNotifyLine(t *testing.T) {
	c := loadBlock(t, 540619)
	j := c.job(t)
	for _, clean := range []bool{false, true} {
		line := j.NotifyLine(clean)
		if line[len(line)-1] != '\n' {
			t.Fatal("notify line lacks its newline")
		}
		var m stratum.Message
		if err := stratum.ParseMessage(line, &m); err != nil {
			t.Fatal(err)
		}
		var n stratum.Notify
		if err := n.DecodeParams(m.Params); err != nil {
			t.Fatal(err)
		}
		if m.Method != stratum.MethodNotify || m.Kind != stratum.KindNotification || n.CleanJobs != clean ||
			n.JobID != j.ID() || n.PrevHash != c.header.PrevBlock || len(n.MerkleBranch) != len(c.notify.MerkleBranch) {
			t.Fatalf("notify line decodes to %+v", n)
		}
	}
}

func TestReasons(t *testing.T) {
	tests := []struct {
		r    job.Reason
		name string
		code int
	}{
		{job.ReasonNone, "", 0},
		{job.ReasonMalformed, "malformed", stratum.CodeOther},
		{job.ReasonBadExtranonceSize, "bad_extranonce_size", stratum.CodeOther},
		{job.ReasonVersionBitsOutsideMask, "version_bits_outside_mask", stratum.CodeOther},
		{job.ReasonBadNtime, "bad_ntime", stratum.CodeOther},
		{job.ReasonStale, "stale", stratum.CodeJobNotFound},
		{job.ReasonDuplicate, "duplicate", stratum.CodeDuplicateShare},
		{job.ReasonLowDifficulty, "low_difficulty", stratum.CodeLowDifficulty},
	}
	for _, tt := range tests {
		if tt.r.String() != tt.name || tt.r.Code() != tt.code || (tt.r != job.ReasonNone && tt.r.Message() == "") {
			t.Errorf("reason %d: %q/%d/%q", tt.r, tt.r.String(), tt.r.Code(), tt.r.Message())
		}
	}
}

// TestPrevHashWireOrder checks field notes §4 on a real block: the notify's
// prevhash is the explorer hex cut into eight 8-digit groups, group order
// reversed.
func TestPrevHashWireOrder(t *testing.T) {
	c := loadBlock(t, 881423)
	explorer := c.header.PrevBlock.String()
	var want strings.Builder
	for g := 7; g >= 0; g-- {
		want.WriteString(explorer[8*g : 8*g+8])
	}
	line := string(stratum.AppendNotification(nil, &c.notify))
	if !strings.Contains(line, `"`+want.String()+`"`) {
		t.Fatalf("notify %s does not carry prevhash %s", line, want.String())
	}
}

func TestCoinbaseLargerThanStackBuffer(t *testing.T) {
	c := loadBlock(t, 540619)
	n := c.notify
	// Pad coinb2's outputs side: the txid changes but must equal sha256d
	// of the concatenation however large.
	n.Coinb2 = append(bytes.Repeat([]byte{0xab}, 3000), n.Coinb2...)
	j, err := job.New(&n, job.Config{})
	if err != nil {
		t.Fatal(err)
	}
	en2 := c.submit.Extranonce2.Bytes()
	want := chainhash.DoubleHashH(j.Coinbase(c.extranonce1, en2))
	if got := j.CoinbaseTxID(c.extranonce1, en2); got != want {
		t.Fatalf("txid %s, want %s", got, want)
	}
}

// TestFromTemplate: a real block's work given as a protocol-neutral
// template builds the same job as its mining.notify: same notify lines, and
// the real block validates as a candidate.
func TestFromTemplate(t *testing.T) {
	for _, height := range realBlocks {
		c := loadBlock(t, height)
		t.Run(c.name, func(t *testing.T) {
			n := c.notify
			tj, err := job.FromTemplate(&job.Template{ID: n.JobID, PrevHash: n.PrevHash, CoinbasePrefix: n.Coinb1,
				CoinbaseSuffix: n.Coinb2, MerkleBranch: n.MerkleBranch, Version: n.Version, NBits: n.NBits, NTime: n.NTime},
				job.Config{ExtranonceSize: len(c.extranonce1) + c.submit.Extranonce2.Len()})
			if err != nil {
				t.Fatal(err)
			}
			nj := c.job(t)
			for _, clean := range []bool{false, true} {
				if !bytes.Equal(tj.NotifyLine(clean), nj.NotifyLine(clean)) {
					t.Errorf("clean=%v: template's notify line\n%s\nnotify's\n%s", clean, tj.NotifyLine(clean), nj.NotifyLine(clean))
				}
			}
			s := c.share(65536)
			if res := tj.Validate(&s); !res.Valid() || !res.BlockCandidate || res.Hash != c.hash {
				t.Fatalf("real block from the template: %+v", res)
			}
		})
	}
	if _, err := job.FromTemplate(&job.Template{ID: "x", NBits: 0xff000000}, job.Config{}); err == nil {
		t.Error("a template with invalid nbits built a job")
	}
}
