package stratumsim

import (
	"context"
	"testing"
)

// BenchmarkHashLoop measures one header hash of the miner's nonce loop
// (SHA-256 midstate of the first 64 bytes + 16-byte tail + second SHA-256).
func BenchmarkHashLoop(b *testing.B) {
	var prev, root [32]byte
	nh := newNonceHasher(buildHeader(DefaultJobVersion, &prev, &root, 1700000000, DefaultNBits, 0))
	var sink [32]byte
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		sink = nh.hash(uint32(i))
	}
	_ = sink
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "MH/s")
}

// BenchmarkShareSearch measures finding one share at difficulty 1e-5
// (about 43,000 hashes on average), including the coinbase and merkle
// root.
func BenchmarkShareSearch(b *testing.B) {
	const d = 1e-5
	var payout [20]byte
	var commit [32]byte
	cb := newCoinbaseTemplate(900_000, 1, payout, commit)
	jd := &jobData{id: "1", coinb1: cb.coinb1(12), coinb2: cb.coinb2, branch: make([][32]byte, 12),
		version: DefaultJobVersion, nbits: DefaultNBits, ntime: 1700000000}
	m := &Miner{opts: MinerOptions{MaxHashesPerShare: 1 << 40}}
	j := &minerJob{data: jd, e1: []byte{1, 2, 3, 4}, e2size: 8, diff: d}
	w := work{mc: &minerConn{}, job: j, target: targetBytes(DifficultyTarget(d))}
	ctx := context.Background()
	var hashes uint64
	for i := 0; b.Loop(); i++ {
		w.claim = uint64(i)
		r, err := m.search(ctx, w, ShareGood)
		if err != nil {
			b.Fatal(err)
		}
		hashes += r.Hashes
	}
	b.ReportMetric(float64(hashes)/float64(b.N), "hashes/share")
}
