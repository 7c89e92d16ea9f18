package job_test

import (
	"sync/atomic"
	"testing"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum/job"
)

// benchJob is block 881423's job with its 11-hash merkle branch extended to
// 12, a block of 2049 to 4096 transactions, and the real 205-byte coinbase.
func benchJob(b *testing.B) (*job.Job, job.Share) {
	c := loadBlock(b, 881423)
	n := c.notify
	n.MerkleBranch = append(n.MerkleBranch[:len(n.MerkleBranch):len(n.MerkleBranch)], n.MerkleBranch[0])
	if len(n.MerkleBranch) != 12 {
		b.Fatalf("branch of %d", len(n.MerkleBranch))
	}
	j, err := job.New(&n, job.Config{ExtranonceSize: 8})
	if err != nil {
		b.Fatal(err)
	}
	return j, c.share(0)
}

// BenchmarkValidate is one miner share through the full check: extranonces,
// version rolling, ntime, coinbase txid, 12 merkle levels, header hash,
// difficulty and network target, and the duplicate tracker (every share is
// accepted and recorded; past 65536 the tracker evicts as in steady state).
func BenchmarkValidate(b *testing.B) {
	j, s := benchJob(b)
	s.Difficulty = 1e-12 // every hash counts, so every share reaches the tracker
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Nonce = uint32(i)
		if res := j.Validate(&s); !res.Valid() {
			b.Fatalf("share %d: %s", i, res.Reason)
		}
	}
}

// BenchmarkValidateLowDifficulty is the reject path: hashed, then refused
// before the tracker.
func BenchmarkValidateLowDifficulty(b *testing.B) {
	j, s := benchJob(b)
	s.Difficulty = 1e12
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Nonce = uint32(i)
		if res := j.Validate(&s); res.Reason != job.ReasonLowDifficulty {
			b.Fatalf("share %d: %q", i, res.Reason)
		}
	}
}

// BenchmarkValidateParallel validates from every core against one job, as
// thousands of miners on one upstream session do.
func BenchmarkValidateParallel(b *testing.B) {
	j, s0 := benchJob(b)
	s0.Difficulty = 1e-12
	b.ReportAllocs()
	var seq atomic.Uint32
	b.RunParallel(func(pb *testing.PB) {
		s := s0
		en1 := []byte{0, 0, 0, byte(seq.Add(1))} // each goroutine is another miner
		s.Extranonce1 = en1
		for i := uint32(0); pb.Next(); i++ {
			s.Nonce = i
			j.Validate(&s)
		}
	})
}

// BenchmarkHashingFloor is only the sha256d work one share needs with a
// 12-hash branch: the coinbase txid, 12 merkle levels and the header, each
// one chainhash.DoubleHashH call. Validate's cost above this is everything
// else (checks, difficulty, duplicate tracking).
func BenchmarkHashingFloor(b *testing.B) {
	j, s := benchJob(b)
	coinbase := j.Coinbase(s.Extranonce1, s.Extranonce2)
	var level [64]byte
	var header [80]byte
	b.ReportAllocs()
	for b.Loop() {
		root := chainhash.DoubleHashH(coinbase)
		for range 12 {
			copy(level[:32], root[:])
			root = chainhash.DoubleHashH(level[:])
		}
		copy(header[36:68], root[:])
		root = chainhash.DoubleHashH(header[:])
		level[0] ^= root[0]
	}
}
