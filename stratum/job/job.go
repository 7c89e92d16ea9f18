// Package job turns a pool's mining.notify into a Job and validates miners'
// shares against it locally: coinbase, merkle root, the 80-byte header with
// BIP310 version rolling, share difficulty, the block-candidate check and
// duplicate detection.
//
// A Job is built once per notify and shared by every miner that receives it:
// it is immutable apart from its duplicate tracker, which is safe for
// concurrent use, and it carries its notify line pre-encoded. Each miner has
// its own extranonce1, so validation takes it as input.
//
// All Bitcoin arithmetic is btcd's: chainhash.DoubleHashH for sha256d,
// wire.BlockHeader's layout for the header and blockchain.CompactToBig for
// nbits (through package pow).
package job

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/pow"
)

// DefaultNtimeWindow is how far past the job's ntime a share's ntime may be
// when Share.NtimeWindow is zero.
const DefaultNtimeWindow = 7200 * time.Second

// DefaultMaxShares is the duplicate tracker's capacity per job when
// Config.MaxShares is zero: a job lives for a minute or two, and 65536
// shares is far more than the miners of one upstream session submit in that
// time. The tracker costs about 16 bytes per share held.
const DefaultMaxShares = 1 << 16

// maxCoinbase bounds the coinbase a job may describe. Real ones are under a
// few kilobytes; a mining.notify line cannot carry more than its line cap.
const maxCoinbase = 64 << 10

// Config holds a job's per-subscription settings.
type Config struct {
	// ExtranonceSize is the number of bytes between coinb1 and coinb2, the
	// upstream subscription's len(extranonce1) + extranonce2_size. When
	// set, a share whose len(extranonce1) + len(extranonce2) differs is
	// rejected with ReasonBadExtranonceSize. Zero checks nothing (only
	// that both fit MaxExtranonceSize).
	ExtranonceSize int
	// MaxShares bounds the duplicate tracker; zero means DefaultMaxShares.
	// Past it the oldest shares are forgotten first, so a duplicate of a
	// very old share may pass locally and be rejected by the pool.
	MaxShares int
}

// Job is one unit of work from a pool, ready to validate shares. Build it
// with New; a Job must not be copied.
type Job struct {
	notify      stratum.Notify
	blockTarget pow.Target
	cfg         Config
	// notifyLines are the pre-encoded mining.notify lines, with
	// clean_jobs false and true.
	notifyLines [2][]byte
	seen        shareSet
}

// Template is a unit of work in protocol-neutral terms: what any upstream
// protocol gives a miner to hash. Stratum V1 carries it in mining.notify
// (New); a Stratum V2 session assembles it from NewExtendedMiningJob and
// SetNewPrevHash and calls FromTemplate. Miners downstream speak V1, so the
// Job still carries the equivalent mining.notify line.
type Template struct {
	ID string
	// PrevHash is the previous block hash in internal byte order.
	PrevHash chainhash.Hash
	// CoinbasePrefix and CoinbaseSuffix are the coinbase transaction's
	// legacy serialization around the extranonce (V1's coinb1 and coinb2).
	CoinbasePrefix, CoinbaseSuffix []byte
	// MerkleBranch is the coinbase's merkle path, internal byte order.
	MerkleBranch []chainhash.Hash
	Version      uint32
	NBits        uint32
	NTime        uint32
}

// FromTemplate builds a Job from a protocol-neutral template; see New for
// the checks. The Job keeps t's slices; the caller must not modify them
// afterwards.
func FromTemplate(t *Template, cfg Config) (*Job, error) {
	return New(&stratum.Notify{JobID: t.ID, PrevHash: t.PrevHash, Coinb1: t.CoinbasePrefix, Coinb2: t.CoinbaseSuffix,
		MerkleBranch: t.MerkleBranch, Version: t.Version, NBits: t.NBits, NTime: t.NTime}, cfg)
}

// New builds a Job from a notify's params (Stratum V1). It fails when the
// nbits do not encode a valid target or the coinbase is absurdly large. The
// Job keeps n; the caller must not modify n's slices afterwards.
func New(n *stratum.Notify, cfg Config) (*Job, error) {
	target, err := pow.TargetFromCompact(n.NBits)
	if err != nil {
		return nil, fmt.Errorf("job %q: %w", n.JobID, err)
	}
	if len(n.Coinb1)+len(n.Coinb2) > maxCoinbase {
		return nil, fmt.Errorf("job %q: coinbase of %d bytes is larger than the %d allowed",
			n.JobID, len(n.Coinb1)+len(n.Coinb2), maxCoinbase)
	}
	if cfg.ExtranonceSize < 0 || cfg.ExtranonceSize > 2*stratum.MaxExtranonceSize {
		return nil, fmt.Errorf("job %q: extranonce size %d is out of range (0 to %d)",
			n.JobID, cfg.ExtranonceSize, 2*stratum.MaxExtranonceSize)
	}
	if cfg.MaxShares <= 0 {
		cfg.MaxShares = DefaultMaxShares
	}
	j := &Job{notify: *n, blockTarget: target, cfg: cfg}
	j.seen.max = cfg.MaxShares
	for i, clean := range [2]bool{false, true} {
		nn := j.notify
		nn.CleanJobs = clean
		j.notifyLines[i] = stratum.AppendNotification(nil, &nn)
	}
	return j, nil
}

// ID returns the job id.
func (j *Job) ID() string { return j.notify.JobID }

// Notify returns the notify the job was built from. Its slices are shared:
// do not modify them.
func (j *Job) Notify() stratum.Notify { return j.notify }

// Version returns the job's block version, before any version rolling.
func (j *Job) Version() uint32 { return j.notify.Version }

// NTime returns the job's ntime.
func (j *Job) NTime() uint32 { return j.notify.NTime }

// NBits returns the job's compact network target.
func (j *Job) NBits() uint32 { return j.notify.NBits }

// BlockTarget returns the network target decoded from nbits.
func (j *Job) BlockTarget() pow.Target { return j.blockTarget }

// ExtranonceSize returns the configured extranonce size (0: unchecked).
func (j *Job) ExtranonceSize() int { return j.cfg.ExtranonceSize }

// NotifyLine returns the job's mining.notify line, "\n" included, encoded
// once when the job was built; clean selects the clean_jobs flag. Every
// miner receiving the job writes the same bytes. The slice is shared and
// must not be modified.
func (j *Job) NotifyLine(clean bool) []byte {
	if clean {
		return j.notifyLines[1]
	}
	return j.notifyLines[0]
}

// coinbaseStack is the coinbase size assembled on the stack; larger
// coinbases (pools paying many outputs) cost one allocation per share.
const coinbaseStack = 1024

// Coinbase returns coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2, the legacy
// serialization of the coinbase transaction.
func (j *Job) Coinbase(extranonce1, extranonce2 []byte) []byte {
	n := &j.notify
	b := make([]byte, 0, len(n.Coinb1)+len(extranonce1)+len(extranonce2)+len(n.Coinb2))
	return appendCoinbase(b, n, extranonce1, extranonce2)
}

func appendCoinbase(b []byte, n *stratum.Notify, extranonce1, extranonce2 []byte) []byte {
	b = append(b, n.Coinb1...)
	b = append(b, extranonce1...)
	b = append(b, extranonce2...)
	return append(b, n.Coinb2...)
}

// CoinbaseTxID returns the coinbase's txid, sha256d of its legacy
// serialization, in internal byte order.
func (j *Job) CoinbaseTxID(extranonce1, extranonce2 []byte) chainhash.Hash {
	n := &j.notify
	size := len(n.Coinb1) + len(extranonce1) + len(extranonce2) + len(n.Coinb2)
	if size > coinbaseStack {
		return chainhash.DoubleHashH(j.Coinbase(extranonce1, extranonce2))
	}
	var buf [coinbaseStack]byte
	return chainhash.DoubleHashH(appendCoinbase(buf[:0], n, extranonce1, extranonce2))
}

// MerkleRoot returns the merkle root for a miner's extranonces: starting
// from the coinbase txid, root = sha256d(root ‖ branch[i]) for each branch
// hash in order.
func (j *Job) MerkleRoot(extranonce1, extranonce2 []byte) chainhash.Hash {
	var buf [2 * chainhash.HashSize]byte
	root := j.CoinbaseTxID(extranonce1, extranonce2)
	for i := range j.notify.MerkleBranch {
		copy(buf[:chainhash.HashSize], root[:])
		copy(buf[chainhash.HashSize:], j.notify.MerkleBranch[i][:])
		root = chainhash.DoubleHashH(buf[:])
	}
	return root
}

// HeaderSize is the length of a serialized block header.
const HeaderSize = wire.MaxBlockHeaderPayload

// Header returns the 80-byte block header a miner hashed, laid out as
// wire.BlockHeader serializes it: LE32(version) ‖ prevhash ‖ merkle root ‖
// LE32(ntime) ‖ LE32(nbits) ‖ LE32(nonce). version is the final header
// version, after any rolling (see MergeVersion).
func (j *Job) Header(extranonce1, extranonce2 []byte, ntime, nonce, version uint32) [HeaderSize]byte {
	root := j.MerkleRoot(extranonce1, extranonce2)
	return j.header(&root, ntime, nonce, version)
}

func (j *Job) header(root *chainhash.Hash, ntime, nonce, version uint32) [HeaderSize]byte {
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:4], version)
	copy(h[4:36], j.notify.PrevHash[:])
	copy(h[36:68], root[:])
	binary.LittleEndian.PutUint32(h[68:72], ntime)
	binary.LittleEndian.PutUint32(h[72:76], j.notify.NBits)
	binary.LittleEndian.PutUint32(h[76:80], nonce)
	return h
}

// BlockHeader returns the same header as a wire.BlockHeader.
func (j *Job) BlockHeader(extranonce1, extranonce2 []byte, ntime, nonce, version uint32) wire.BlockHeader {
	return wire.BlockHeader{
		Version:    int32(version),
		PrevBlock:  j.notify.PrevHash,
		MerkleRoot: j.MerkleRoot(extranonce1, extranonce2),
		Timestamp:  time.Unix(int64(ntime), 0),
		Bits:       j.notify.NBits,
		Nonce:      nonce,
	}
}

// MergeVersion applies BIP310 version rolling: the header version is
// (jobVersion &^ mask) | (versionBits & mask). ok is false, and the share
// must be rejected rather than masked, when versionBits has a bit outside
// mask.
func MergeVersion(jobVersion, versionBits, mask uint32) (version uint32, ok bool) {
	if versionBits&^mask != 0 {
		return 0, false
	}
	return jobVersion&^mask | versionBits, true
}
