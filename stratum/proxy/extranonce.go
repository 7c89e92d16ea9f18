package proxy

import (
	"errors"
	"fmt"
)

// Split is how one upstream session's extranonce space is divided between the
// miners on it (field notes §5): each miner's extranonce1 is the pool's E1
// followed by a PrefixBytes-byte prefix unique on the session, and the miner
// rolls MinerExtranonce2Size bytes. Upstream, extranonce2 = prefix ‖ miner's
// extranonce2.
type Split struct {
	PoolExtranonce2Size  int // N, from the pool's subscribe result
	PrefixBytes          int // k
	MinerExtranonce2Size int // N − k
	// Capacity is how many miners the session can carry: 256^k, capped by
	// miners_per_session.
	Capacity int
	// Why explains the choice for the log, in operator's words.
	Why string
}

// minMinerExtranonce2 is the smallest extranonce2 we hand a miner: stock
// Whatsminers produce duplicate shares below 3 bytes, but 2 still works for
// most firmware and beats refusing the pool.
const minMinerExtranonce2 = 2

// maxMinerExtranonce2 is what cgminer-lineage firmware (stock Antminer) can take.
const maxMinerExtranonce2 = 8

// PlanSplit derives k from the pool's extranonce2 size n, the listener's
// wanted miner extranonce2 size and miners_per_session.
func PlanSplit(n, want, minersPerSession int) (Split, error) {
	if n < 1 || n > 32 {
		return Split{}, fmt.Errorf("pool offers extranonce2_size %d, outside 1..32", n)
	}
	if minersPerSession < 1 {
		minersPerSession = 1
	}
	s := Split{PoolExtranonce2Size: n}
	switch {
	case n-want >= 1:
		s.PrefixBytes = n - want
		s.Why = fmt.Sprintf("pool gives %d extranonce2 bytes; miners get the configured %d and %d byte(s) make the per-miner prefix", n, want, n-want)
	case n-1 >= minMinerExtranonce2:
		s.PrefixBytes = 1
		s.Why = fmt.Sprintf("pool gives only %d extranonce2 bytes; miners get %d instead of the configured %d so a 1-byte prefix can split the session", n, n-1, want)
	default:
		s.PrefixBytes = 0
		s.Why = fmt.Sprintf("pool gives only %d extranonce2 byte(s), too few to split: one miner per upstream session", n)
	}
	s.MinerExtranonce2Size = n - s.PrefixBytes
	if s.MinerExtranonce2Size > maxMinerExtranonce2 {
		// Move the excess into the prefix: stock Antminers cannot roll more than 8 bytes.
		s.PrefixBytes = n - maxMinerExtranonce2
		s.MinerExtranonce2Size = maxMinerExtranonce2
		s.Why += fmt.Sprintf("; capped miners at %d bytes (cgminer limit)", maxMinerExtranonce2)
	}
	capacity := 1
	for i := 0; i < s.PrefixBytes && capacity < minersPerSession; i++ {
		capacity *= 256
	}
	s.Capacity = min(capacity, minersPerSession)
	return s, nil
}

// errNoPrefix means the session is full.
var errNoPrefix = errors.New("upstream session has no free extranonce prefix")

// prefixes hands out the per-miner prefixes of one upstream session. It is
// owned by the session and guarded by the session's mutex.
type prefixes struct {
	bytes int
	cap   int
	used  []bool
	// free holds released prefixes, oldest first. Fresh prefixes are used
	// before any released one, and the oldest released one after that: a
	// new miner's extranonce2 starts where the last holder's did, so reusing
	// a prefix at once would reproduce that miner's shares as duplicates
	// within the same job.
	free  []uint32
	next  uint32
	inUse int
}

func newPrefixes(s Split) *prefixes {
	return &prefixes{bytes: s.PrefixBytes, cap: s.Capacity, used: make([]bool, s.Capacity)}
}

// take returns a free prefix value.
func (p *prefixes) take() (uint32, error) {
	if p.inUse >= p.cap {
		return 0, errNoPrefix
	}
	var v uint32
	if int(p.next) < p.cap {
		v = p.next
		p.next++
	} else {
		v = p.free[0]
		p.free = p.free[1:]
	}
	p.used[v] = true
	p.inUse++
	return v, nil
}

// release returns a prefix; releasing one not in use is a no-op.
func (p *prefixes) release(v uint32) {
	if int(v) >= len(p.used) || !p.used[v] {
		return
	}
	p.used[v] = false
	p.inUse--
	p.free = append(p.free, v)
}

// encode writes v as the k-byte big-endian prefix.
func (p *prefixes) encode(v uint32) []byte {
	b := make([]byte, p.bytes)
	for i := p.bytes - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}
