package stratumsim

import (
	"encoding/hex"
	"strconv"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"
)

// poolJob is one job of the Pool. The fields above the marker are immutable
// after createJobLocked; the rest are guarded by Pool.mu.
type poolJob struct {
	seq       uint64
	id        string
	prevHash  [32]byte // internal order
	version   uint32
	nbits     uint32
	ntime     uint32
	clean     bool
	cb        coinbaseTemplate
	tmpl      *JobTemplate // the template it was built on; nil for an invented block
	branch    [][32]byte
	branchHex []string
	createdAt time.Time

	// guarded by Pool.mu
	stale     bool                        // superseded by a clean job or aged out
	lines     map[int][]byte              // notify line by 2*extranonceLen+cleanFlag
	seen      map[chainhash.Hash]struct{} // accepted share hashes (duplicates)
	firstSent time.Time
	lastSent  time.Time
	sends     int
}

// JobInfo is the record of one Pool job.
type JobInfo struct {
	Seq       uint64    // 1-based creation order; miners see it as PoolJobSeq
	ID        string    // the job_id sent in mining.notify
	Clean     bool      // clean_jobs flag of the broadcast
	PrevHash  string    // previous block hash, block-explorer hex
	Version   uint32    // job version
	NBits     uint32    // compact network target
	NTime     uint32    // job ntime
	CreatedAt time.Time // when the job was created (monotonic clock)
	FirstSent time.Time // start of the first socket write of its notify (zero if never sent)
	LastSent  time.Time // start of the last socket write of its notify
	Sends     int       // notify lines handed to the socket for it
	Stale     bool      // no longer accepted (21)
}

// createJobLocked builds a job with the current prevhash, makes it the
// newest valid job and logs it. clean=true makes every earlier job stale.
func (p *Pool) createJobLocked(clean bool) *poolJob {
	p.jobSeq++
	now := time.Now()
	j := &poolJob{
		seq:       p.jobSeq,
		id:        strconv.FormatUint(p.jobIDBase+p.jobSeq, 16),
		prevHash:  p.prevHash,
		version:   DefaultJobVersion,
		nbits:     p.opts.NBits,
		ntime:     uint32(now.Unix()),
		clean:     clean,
		createdAt: now,
		lines:     make(map[int][]byte),
		seen:      make(map[chainhash.Hash]struct{}),
	}
	if st := p.tmpl; st != nil {
		t := st.t
		j.tmpl = t
		j.prevHash, j.version, j.nbits = t.PrevHash, t.Version, t.NBits
		j.ntime = max(j.ntime, t.NTime)
		j.cb = newCoinbase(t.Height, p.jobSeq, st.outputs)
		j.branch = st.branch
	} else {
		var commitment [32]byte
		fillRand(p.rng, commitment[:])
		j.cb = newCoinbaseTemplate(p.opts.BlockHeight, p.jobSeq, p.payout, commitment)
		j.branch = make([][32]byte, p.opts.MerkleBranches)
		for i := range j.branch {
			fillRand(p.rng, j.branch[i][:])
		}
	}
	j.branchHex = make([]string, len(j.branch))
	for i := range j.branch {
		j.branchHex[i] = hex.EncodeToString(j.branch[i][:])
	}
	if clean {
		for _, old := range p.jobs {
			old.stale = true
			old.seen = nil
		}
		p.jobs = p.jobs[:0]
	}
	p.jobs = append(p.jobs, j)
	for len(p.jobs) > p.opts.KeepJobs {
		p.jobs[0].stale = true
		p.jobs[0].seen = nil
		p.jobs = p.jobs[1:]
	}
	p.jobLog = append(p.jobLog, j)
	if len(p.jobLog) > 10_000 {
		p.jobLog = append(p.jobLog[:0], p.jobLog[len(p.jobLog)-5_000:]...)
	}
	p.stats.JobsCreated++
	return j
}

// notifyLineLocked returns the mining.notify line for sessions whose
// extranonce region (extranonce1 + extranonce2) is exLen bytes.
func (j *poolJob) notifyLineLocked(exLen int, clean bool) []byte {
	key := 2 * exLen
	if clean {
		key++
	}
	if l := j.lines[key]; l != nil {
		return l
	}
	l := notificationLine("mining.notify", []any{
		j.id,
		encodePrevHash(j.prevHash),
		hex.EncodeToString(j.cb.coinb1(exLen)),
		hex.EncodeToString(j.cb.coinb2),
		j.branchHex,
		hex32(j.version),
		hex32(j.nbits),
		hex32(j.ntime),
		clean,
	})
	j.lines[key] = l
	return l
}

func (j *poolJob) infoLocked() JobInfo {
	return JobInfo{
		Seq:       j.seq,
		ID:        j.id,
		Clean:     j.clean,
		PrevHash:  chainhash.Hash(j.prevHash).String(),
		Version:   j.version,
		NBits:     j.nbits,
		NTime:     j.ntime,
		CreatedAt: j.createdAt,
		FirstSent: j.firstSent,
		LastSent:  j.lastSent,
		Sends:     j.sends,
		Stale:     j.stale,
	}
}

// currentJobLocked returns the newest valid job (nil only before Start).
func (p *Pool) currentJobLocked() *poolJob {
	if len(p.jobs) == 0 {
		return nil
	}
	return p.jobs[len(p.jobs)-1]
}

// broadcastJobLocked sends j to every session that has work flowing.
func (p *Pool) broadcastJobLocked(j *poolJob) {
	if p.opts.NoJobs {
		return
	}
	for _, s := range p.sessions {
		if s.ready {
			p.sendJobLocked(s, j, j.clean)
		}
	}
}

// sendJobLocked queues j for s, remembering the difficulty and extranonce
// in force for s now: its shares for j are checked against those.
func (p *Pool) sendJobLocked(s *session, j *poolJob, clean bool) {
	for id, sj := range s.sent {
		if sj.job.stale {
			delete(s.sent, id)
		}
	}
	s.sent[j.id] = &sentJob{job: j, diff: s.diff, e1: s.e1, e2size: s.e2size}
	s.enqueue(j.notifyLineLocked(len(s.e1)+s.e2size, clean), j)
	p.stats.NotifiesSent++
}

// sentJob is a job as sent to one session.
type sentJob struct {
	job    *poolJob
	diff   float64
	e1     []byte // never mutated: SetExtranonce installs a new slice
	e2size int
}

func hexStr(b []byte) string { return hex.EncodeToString(b) }
