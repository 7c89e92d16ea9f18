package job

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/pow"
)

// Reason says why a share was rejected; ReasonNone means it is valid. Each
// reason maps to the Stratum error code a miner should get (Code) and has a
// short snake_case name for logs and metrics (String).
type Reason uint8

const (
	ReasonNone Reason = iota
	// ReasonMalformed: a field could not be decoded. Code 20.
	ReasonMalformed
	// ReasonBadExtranonceSize: extranonce2 has the wrong length for the
	// subscription. Code 20.
	ReasonBadExtranonceSize
	// ReasonVersionBitsOutsideMask: the sixth submit param sets bits
	// outside the negotiated version-rolling mask. Code 20.
	ReasonVersionBitsOutsideMask
	// ReasonBadNtime: ntime is before the job's or beyond the allowed
	// window after it. Code 20.
	ReasonBadNtime
	// ReasonStale: the job is unknown or no longer current. Validate never
	// returns it (a Job cannot know it has been superseded); the caller
	// does when the job lookup fails. Code 21.
	ReasonStale
	// ReasonDuplicate: the same share was already accepted. Code 22.
	ReasonDuplicate
	// ReasonLowDifficulty: the hash does not meet the share difficulty.
	// Code 23.
	ReasonLowDifficulty
)

// String returns the reason's short name ("low_difficulty"); "" for
// ReasonNone.
func (r Reason) String() string {
	switch r {
	case ReasonNone:
		return ""
	case ReasonMalformed:
		return "malformed"
	case ReasonBadExtranonceSize:
		return "bad_extranonce_size"
	case ReasonVersionBitsOutsideMask:
		return "version_bits_outside_mask"
	case ReasonBadNtime:
		return "bad_ntime"
	case ReasonStale:
		return "stale"
	case ReasonDuplicate:
		return "duplicate"
	case ReasonLowDifficulty:
		return "low_difficulty"
	}
	return "unknown"
}

// Code returns the Stratum error code to answer the share with; 0 for
// ReasonNone.
func (r Reason) Code() int {
	switch r {
	case ReasonNone:
		return 0
	case ReasonStale:
		return stratum.CodeJobNotFound
	case ReasonDuplicate:
		return stratum.CodeDuplicateShare
	case ReasonLowDifficulty:
		return stratum.CodeLowDifficulty
	}
	return stratum.CodeOther
}

// Message returns the error message to send the miner with Code.
func (r Reason) Message() string {
	switch r {
	case ReasonNone:
		return ""
	case ReasonMalformed:
		return "malformed share"
	case ReasonBadExtranonceSize:
		return "extranonce2 has the wrong size"
	case ReasonVersionBitsOutsideMask:
		return "version bits outside the negotiated mask"
	case ReasonBadNtime:
		return "ntime out of range"
	case ReasonStale:
		return "job not found (stale)"
	case ReasonDuplicate:
		return "duplicate share"
	case ReasonLowDifficulty:
		return "low difficulty share"
	}
	return "rejected"
}

// Share is one miner submission with the context it must be judged in.
type Share struct {
	// Extranonce1 is the miner's own extranonce1, as sent in its subscribe
	// result (for an aggregating proxy: the pool's extranonce1 followed by
	// the miner's prefix).
	Extranonce1 []byte
	Extranonce2 []byte
	NTime       uint32
	Nonce       uint32
	// VersionBits is the sixth submit param, used when HasVersionBits.
	VersionBits    uint32
	HasVersionBits bool
	// VersionMask is the version-rolling mask granted to the miner; 0 when
	// it negotiated none.
	VersionMask uint32
	// Difficulty is the share difficulty in force when the miner received
	// the job. Zero or less accepts any hash (no share target).
	Difficulty float64
	// NtimeWindow is how far past the job's ntime the share's may be;
	// zero means DefaultNtimeWindow. Sub-second parts are ignored.
	NtimeWindow time.Duration
}

// FromSubmit fills in the fields a decoded mining.submit carries. s's
// Extranonce2 then aliases sub.
func (s *Share) FromSubmit(sub *stratum.Submit) {
	s.Extranonce2 = sub.Extranonce2.Bytes()
	s.NTime = sub.NTime
	s.Nonce = sub.Nonce
	s.VersionBits = sub.VersionBits
	s.HasVersionBits = sub.HasVersionBits
}

// Result is the verdict on a share.
type Result struct {
	Reason Reason
	// Version is the header version the share was hashed with.
	Version uint32
	// Hash is the block hash (internal byte order; Hash.String() is the
	// explorer form). Hashed is false, and Hash, Difficulty and
	// BlockCandidate are zero, when the share was rejected before hashing.
	Hash   chainhash.Hash
	Hashed bool
	// Difficulty is the difficulty the hash achieves (diff1 / hash).
	Difficulty float64
	// BlockCandidate is set when the hash meets the network target: the
	// share solves a block and must reach the pool without delay.
	BlockCandidate bool
}

// Valid reports whether the share is accepted.
func (r *Result) Valid() bool { return r.Reason == ReasonNone }

// Validate judges a share against the job. It checks, in order: the
// extranonce sizes, the version bits against the mask (BIP310: rejected, not
// masked), ntime within [job ntime, job ntime + window], then hashes the
// header and checks the hash against the share difficulty and the network
// target, and finally that the share is not a duplicate. A block candidate
// is accepted even if it misses the share difficulty: a block is never
// dropped. Accepted shares are remembered for duplicate detection.
//
// Validate is safe for concurrent use. It does not allocate for coinbases up
// to 1 KiB, apart from the duplicate tracker growing towards its cap.
func (j *Job) Validate(s *Share) Result {
	var r Result
	en := len(s.Extranonce1) + len(s.Extranonce2)
	if (j.cfg.ExtranonceSize > 0 && en != j.cfg.ExtranonceSize) ||
		len(s.Extranonce1) > stratum.MaxExtranonceSize || len(s.Extranonce2) > stratum.MaxExtranonceSize {
		r.Reason = ReasonBadExtranonceSize
		return r
	}
	r.Version = j.notify.Version
	if s.HasVersionBits {
		v, ok := MergeVersion(j.notify.Version, s.VersionBits, s.VersionMask)
		if !ok {
			r.Reason = ReasonVersionBitsOutsideMask
			return r
		}
		r.Version = v
	}
	if !j.NTimeOK(s.NTime, s.NtimeWindow) {
		r.Reason = ReasonBadNtime
		return r
	}
	hdr := j.Header(s.Extranonce1, s.Extranonce2, s.NTime, s.Nonce, r.Version)
	r.Hash = chainhash.DoubleHashH(hdr[:])
	r.Hashed = true
	r.Difficulty = pow.HashDifficulty(&r.Hash)
	r.BlockCandidate = j.blockTarget.Accepts(&r.Hash)
	if !r.BlockCandidate && !pow.MeetsDifficulty(&r.Hash, s.Difficulty) {
		r.Reason = ReasonLowDifficulty
		return r
	}
	if j.seen.add(binary.LittleEndian.Uint64(r.Hash[:8])) {
		r.Reason = ReasonDuplicate
	}
	return r
}

// NTimeOK reports whether ntime lies within [job ntime, job ntime + window];
// window zero means DefaultNtimeWindow.
func (j *Job) NTimeOK(ntime uint32, window time.Duration) bool {
	if window <= 0 {
		window = DefaultNtimeWindow
	}
	return ntime >= j.notify.NTime && uint64(ntime) <= uint64(j.notify.NTime)+uint64(window/time.Second)
}

// shareSet remembers accepted shares by 64 bits of their block hash, which
// commits to everything that makes two submissions the same share: the job,
// extranonce1 and extranonce2, ntime, nonce and version. The low-order hash
// bytes are used because they are uniformly random even for shares that
// meet a high difficulty. A false match between different shares needs a
// 64-bit collision among the few thousand a job sees. Memory is bounded by
// max; past it the oldest entries are evicted first.
type shareSet struct {
	mu   sync.Mutex
	seen map[uint64]struct{}
	ring []uint64 // insertion order, for eviction
	next int      // next ring slot to overwrite once the ring is full
	max  int
}

// add records key and reports whether it was already present.
func (s *shareSet) add(key uint64) (dup bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[key]; ok {
		return true
	}
	if s.seen == nil {
		s.seen = make(map[uint64]struct{}, 64)
	}
	if len(s.ring) < s.max {
		s.ring = append(s.ring, key)
	} else {
		delete(s.seen, s.ring[s.next])
		s.ring[s.next] = key
		s.next = (s.next + 1) % s.max
	}
	s.seen[key] = struct{}{}
	return false
}

// SharesSeen returns how many accepted shares the job currently remembers.
func (j *Job) SharesSeen() int {
	j.seen.mu.Lock()
	defer j.seen.mu.Unlock()
	return len(j.seen.seen)
}
