package stratumsim

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// Share is the Pool's record of one mining.submit.
type Share struct {
	SessionID      uint64
	Worker         string // worker name as submitted
	JobID          string
	JobSeq         uint64 // the job's Seq (0 when the job was unknown)
	Extranonce1    string // hex, as in force for the job on this session
	Extranonce2    string // hex, as submitted
	NTime          uint32
	Nonce          uint32
	VersionBits    uint32 // 6th param (0 when absent)
	HasVersionBits bool   // a 6th param was sent
	Version        uint32 // nVersion of the header the pool hashed
	Header         [80]byte
	Hash           chainhash.Hash // block hash (zero when not computed)
	Hashed         bool           // Header/Hash/Difficulty are set
	Difficulty     float64        // share difficulty diff1/hash
	Target         float64        // difficulty required: the session's when the job was sent
	BlockCandidate bool           // hash <= the job's nbits target
	// Coinbase is the legacy (non-witness) coinbase transaction the pool
	// hashed, and Template the JobTemplate of the job; both are set only
	// for jobs built on a JobTemplate, so its provider can assemble the
	// block from Header, Coinbase and its own transactions.
	Coinbase   []byte
	Template   *JobTemplate
	Accepted   bool
	Code       int    // error code when rejected
	Message    string // error message when rejected
	Forced     bool   // verdict came from RejectNext
	Answered   bool   // false when verdicts were suppressed
	ReceivedAt time.Time
}

// handleSubmit validates one mining.submit, answers it and records it.
func (p *Pool) handleSubmit(s *session, id, params json.RawMessage) {
	sh := Share{SessionID: s.id, ReceivedAt: time.Now()}
	var raw []json.RawMessage
	var f [6]string
	perr := ""
	if err := json.Unmarshal(params, &raw); err != nil {
		perr = "Malformed params"
	} else if len(raw) != 5 && len(raw) != 6 {
		perr = fmt.Sprintf("Want 5 or 6 params, got %d", len(raw))
	} else {
		for i := range raw {
			if json.Unmarshal(raw[i], &f[i]) != nil {
				perr = fmt.Sprintf("Param %d is not a string", i+1)
				break
			}
		}
	}
	sh.Worker, sh.JobID, sh.Extranonce2 = f[0], f[1], f[2]
	sh.HasVersionBits = len(raw) == 6

	p.mu.Lock()
	s.noteMethodLocked("mining.submit")
	var forced *forcedVerdict
	if len(p.forced) > 0 {
		fv := p.forced[0]
		p.forced = p.forced[1:]
		forced = &fv
	}
	var code int
	var msg string
	var sj *sentJob
	switch {
	case perr != "":
		code, msg = CodeOther, perr
	case !s.subscribed:
		code, msg = CodeNotSubscribed, "Not subscribed"
	case !s.userSet[sh.Worker]:
		code, msg = CodeUnauthorized, "Unauthorized worker"
	default:
		sj = s.sent[sh.JobID]
		if sj == nil || sj.job.stale {
			code, msg, sj = CodeJobNotFound, "Job not found", nil
		}
	}
	mask := uint32(0)
	if s.rolling {
		mask = s.mask
	}
	rejectFunc := p.rejectFunc
	p.mu.Unlock()

	if sj != nil {
		code, msg = checkShare(&sh, sj, mask, f[3], f[4], f[5])
		if code == 0 && forced == nil && rejectFunc != nil {
			if c, m, r := rejectFunc(sh); r {
				code, msg = c, m
			}
		}
	}

	p.mu.Lock()
	if code == 0 && forced == nil {
		switch _, dup := sj.job.seen[sh.Hash]; {
		case sj.job.stale:
			code, msg = CodeJobNotFound, "Job not found"
		case dup:
			code, msg = CodeDuplicate, "Duplicate share"
		default:
			sj.job.seen[sh.Hash] = struct{}{}
		}
	}
	if forced != nil {
		code, msg, sh.Forced = forced.code, forced.msg, true
	}
	sh.Accepted = code == 0
	sh.Code, sh.Message = code, msg
	var line []byte
	if sh.Accepted {
		line = responseLine(id, true, nil)
	} else {
		line = responseLine(id, nil, &RPCError{code, msg})
	}
	if !p.suppress {
		sh.Answered = true
		if p.delay > 0 {
			s.enqueueAt(line, time.Now().Add(p.delay))
		} else {
			s.enqueue(line, nil)
		}
	}
	p.recordShareLocked(s, &sh)
	onShare := p.opts.OnShare
	p.mu.Unlock()
	if onShare != nil {
		onShare(sh)
	}
}

// checkShare validates a share for a job the session was sent, filling the
// header, hash and difficulties. The construction uses btcd's wire and
// chainhash types only. It returns 0 or a rejection code and message.
func checkShare(sh *Share, sj *sentJob, mask uint32, ntimeHex, nonceHex, vbHex string) (int, string) {
	j := sj.job
	sh.JobSeq = j.seq
	sh.Extranonce1 = hexStr(sj.e1)
	sh.Target = sj.diff
	e2, err := hex.DecodeString(sh.Extranonce2)
	if err != nil || len(e2) != sj.e2size {
		return CodeOther, fmt.Sprintf("Invalid extranonce2 size (want %d bytes)", sj.e2size)
	}
	if sh.NTime, err = parseHex32(ntimeHex); err != nil {
		return CodeOther, "Invalid ntime"
	}
	if sh.Nonce, err = parseHex32(nonceHex); err != nil {
		return CodeOther, "Invalid nonce"
	}
	sh.Version = j.version
	if sh.HasVersionBits {
		if sh.VersionBits, err = parseHex32(vbHex); err != nil {
			return CodeOther, "Invalid version bits"
		}
		if sh.VersionBits&^mask != 0 {
			return CodeOther, fmt.Sprintf("Invalid version bits %08x outside mask %08x", sh.VersionBits, mask)
		}
		sh.Version = j.version&^mask | sh.VersionBits&mask
	}
	if sh.NTime < j.ntime || int64(sh.NTime) > time.Now().Unix()+7200 {
		return CodeOther, "Ntime out of range"
	}

	coinbase := make([]byte, 0, 256)
	coinbase = append(coinbase, j.cb.coinb1(len(sj.e1)+sj.e2size)...)
	coinbase = append(coinbase, sj.e1...)
	coinbase = append(coinbase, e2...)
	coinbase = append(coinbase, j.cb.coinb2...)
	root := chainhash.DoubleHashH(coinbase)
	pair := make([]byte, 64)
	for _, b := range j.branch {
		copy(pair, root[:])
		copy(pair[32:], b[:])
		root = chainhash.DoubleHashH(pair)
	}
	hdr := wire.BlockHeader{
		Version:    int32(sh.Version),
		PrevBlock:  chainhash.Hash(j.prevHash),
		MerkleRoot: root,
		Timestamp:  time.Unix(int64(sh.NTime), 0),
		Bits:       j.nbits,
		Nonce:      sh.Nonce,
	}
	var buf bytes.Buffer
	if err := hdr.Serialize(&buf); err != nil {
		return CodeOther, "Header serialization failed"
	}
	copy(sh.Header[:], buf.Bytes())
	sh.Hash = hdr.BlockHash()
	sh.Hashed = true
	sh.Difficulty = HashDifficulty(sh.Hash)
	h := blockchain.HashToBig(&sh.Hash)
	sh.BlockCandidate = h.Cmp(blockchain.CompactToBig(j.nbits)) <= 0
	if j.tmpl != nil {
		sh.Coinbase, sh.Template = coinbase, j.tmpl
	}
	// A share that solves a real block is taken even below the session's
	// difficulty (a proxy forwards block candidates whatever the pool's
	// difficulty, and a pool submits them): on regtest every share is a
	// block, so a difficulty change would otherwise reject blocks.
	if h.Cmp(DifficultyTarget(sj.diff)) > 0 && !(sh.BlockCandidate && j.tmpl != nil) {
		return CodeLowDifficulty, fmt.Sprintf("Low difficulty share (%.3g < %.3g)", sh.Difficulty, sj.diff)
	}
	return 0, ""
}

// recordShareLocked updates counters and records.
func (p *Pool) recordShareLocked(s *session, sh *Share) {
	p.stats.Submits++
	s.submits++
	u := p.users[sh.Worker]
	if u == nil {
		u = &UserStats{RejectedByCode: make(map[int]uint64)}
		p.users[sh.Worker] = u
	}
	if sh.Accepted {
		p.stats.Accepted++
		s.accepted++
		u.Accepted++
		if sh.BlockCandidate {
			p.stats.BlockCandidates++
		}
		if p.opts.KeepShares > 0 {
			p.accepted[sh.Hash] = struct{}{}
			p.acceptedLog = append(p.acceptedLog, sh.Hash)
			if len(p.acceptedLog) > p.opts.KeepShares {
				half := len(p.acceptedLog) / 2
				for _, h := range p.acceptedLog[:half] {
					delete(p.accepted, h)
				}
				p.acceptedLog = append(p.acceptedLog[:0], p.acceptedLog[half:]...)
			}
		}
	} else {
		p.stats.Rejected++
		s.rejected++
		u.Rejected++
		u.RejectedByCode[sh.Code]++
		p.byCode[sh.Code]++
	}
	if p.opts.KeepShares > 0 {
		p.shares = append(p.shares, *sh)
		if len(p.shares) > p.opts.KeepShares {
			half := len(p.shares) / 2
			p.shares = append(p.shares[:0], p.shares[half:]...)
		}
	}
	p.notifyLocked()
}
