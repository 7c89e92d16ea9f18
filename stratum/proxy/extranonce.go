package proxy

import (
	"errors"
	"fmt"
	"math/bits"
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
	// miners_per_session (MaxSessionCapacity when it is "auto").
	Capacity int
	// Why explains the choice for the log, in operator's words.
	Why string
}

// SplitPolicy is what the listener and the pool's configuration allow a
// split.
type SplitPolicy struct {
	// MinerExtranonce2Size is the listener's extranonce2_size: miners get
	// exactly this many bytes whenever the pool leaves room for a prefix.
	MinerExtranonce2Size int
	// MinMinerExtranonce2Size is the listener's min_miner_extranonce2_size:
	// when the pool gives too few bytes for MinerExtranonce2Size and a
	// prefix, miners get fewer, but never fewer than this (nor than
	// MinerExtranonce2Size, when that is smaller); below it, one miner per
	// session.
	MinMinerExtranonce2Size int
	// MinersPerSession is the pool's miners_per_session: 0 ("auto") lets a
	// session carry as many miners as its prefix allows, up to
	// MaxSessionCapacity; a number caps it there.
	MinersPerSession int
}

// MaxSessionCapacity bounds the miners one upstream session carries with
// miners_per_session = "auto": 65,536, a 2-byte prefix. A pool's vardiff
// sees one session as one worker, and a farm larger than this is better
// split than carried on one connection whose loss would move every miner
// at once.
const MaxSessionCapacity = 1 << 16

// maxMinerExtranonce2 is what cgminer-lineage firmware (stock Antminer) can take.
const maxMinerExtranonce2 = 8

// PlanSplit derives the prefix size k from the pool's extranonce2 size n
// and the policy: the largest prefix that leaves miners the listener's
// extranonce2_size, else a 1-byte prefix if miners keep at least the
// minimum, else no split. The capacity is 256^k, capped by
// miners_per_session or, with "auto", by MaxSessionCapacity.
func PlanSplit(n int, p SplitPolicy) (Split, error) {
	if n < 1 || n > 32 {
		return Split{}, fmt.Errorf("pool offers extranonce2_size %d, outside 1..32", n)
	}
	want := max(p.MinerExtranonce2Size, 1)
	floor := max(min(p.MinMinerExtranonce2Size, want), 1)
	s := Split{PoolExtranonce2Size: n}
	switch {
	case n-want >= 1:
		s.PrefixBytes = n - want
		s.Why = fmt.Sprintf("pool gives %d extranonce2 bytes; miners get the configured %d and %d byte(s) make the per-miner prefix", n, want, n-want)
	case n-1 >= floor:
		s.PrefixBytes = 1
		s.Why = fmt.Sprintf("pool gives only %d extranonce2 bytes; miners get %d instead of the configured %d (min_miner_extranonce2_size %d allows it) so a 1-byte prefix can split the session", n, n-1, want, floor)
	default:
		s.PrefixBytes = 0
		s.Why = fmt.Sprintf("pool gives only %d extranonce2 byte(s): a prefix would leave miners fewer than min_miner_extranonce2_size %d, so one miner per upstream session (lower min_miner_extranonce2_size to split sessions, if the miners' firmware can roll fewer bytes)", n, floor)
	}
	s.MinerExtranonce2Size = n - s.PrefixBytes
	if s.MinerExtranonce2Size > maxMinerExtranonce2 {
		// Move the excess into the prefix: stock Antminers cannot roll more than 8 bytes.
		s.PrefixBytes = n - maxMinerExtranonce2
		s.MinerExtranonce2Size = maxMinerExtranonce2
		s.Why += fmt.Sprintf("; capped miners at %d bytes (cgminer limit)", maxMinerExtranonce2)
	}
	limit, how := p.MinersPerSession, fmt.Sprintf("miners_per_session = %d", p.MinersPerSession)
	if limit <= 0 {
		limit, how = MaxSessionCapacity, fmt.Sprintf("miners_per_session = \"auto\", at most %d", MaxSessionCapacity)
	}
	s.Capacity = min(prefixSpace(s.PrefixBytes), limit)
	s.Why += fmt.Sprintf("; %d miner(s) a session (%s)", s.Capacity, how)
	return s, nil
}

// prefixSpace returns 256^k, saturating at the largest int.
func prefixSpace(k int) int {
	if k >= (bits.UintSize-1)/8 {
		return int(^uint(0) >> 1)
	}
	return 1 << (8 * k)
}

// errNoPrefix means the session is full.
var errNoPrefix = errors.New("upstream session has no free extranonce prefix")

// prefixes hands out the per-miner prefixes of one upstream session. It is
// owned by the session and guarded by the session's mutex.
//
// Its memory follows the miners the session has had, not its capacity: a
// session that may carry 65,536 (or, set explicitly, millions of) miners
// but carries 300 holds a 300-bit table.
type prefixes struct {
	bytes int
	cap   int
	used  []uint64 // bit v: prefix v is held; covers [0, next)
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
	return &prefixes{bytes: s.PrefixBytes, cap: s.Capacity}
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
		if int(v/64) >= len(p.used) {
			p.used = append(p.used, 0)
		}
	} else {
		v = p.free[0]
		p.free = p.free[1:]
	}
	p.used[v/64] |= 1 << (v % 64)
	p.inUse++
	return v, nil
}

// release returns a prefix; releasing one not in use is a no-op.
func (p *prefixes) release(v uint32) {
	if v >= p.next || p.used[v/64]&(1<<(v%64)) == 0 {
		return
	}
	p.used[v/64] &^= 1 << (v % 64)
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
