// Package share checks one share offline, the way the proxy does in line:
// the tool an operator reaches for when a pool and a miner disagree about a
// share. It is the logic behind `proxyd share verify`; the JSON shapes of
// Request and Report are that command's contract.
package share

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/job"
	"github.com/hashgate/proxyd/stratum/pow"
)

// Request describes one share: the job as the miner received it, the
// miner's extranonce1, its submission and the terms it was mining under.
//
//	{"notify": [notify params exactly as in mining.notify],
//	 "extranonce1": "hex",
//	 "submit": [submit params exactly as in mining.submit],
//	 "version_mask": "1fffe000" or null,
//	 "difficulty": 8192}
type Request struct {
	Notify      json.RawMessage `json:"notify"`
	Extranonce1 *string         `json:"extranonce1"`
	Submit      json.RawMessage `json:"submit"`
	VersionMask *string         `json:"version_mask"`
	Difficulty  *float64        `json:"difficulty"`
}

// Report is the verdict, printed as one JSON object.
type Report struct {
	Valid bool `json:"valid"`
	// Reason is "" for a valid share, otherwise job.Reason's name:
	// "malformed", "bad_extranonce_size", "version_bits_outside_mask",
	// "bad_ntime", "stale" (the submit names another job than the
	// notify), "low_difficulty".
	Reason string `json:"reason"`
	// BlockHash is the header's sha256d in explorer (display) order.
	BlockHash       string  `json:"block_hash"`
	ShareDifficulty float64 `json:"share_difficulty"`
	// Header is the 80-byte header as hex, in serialization order.
	Header         string `json:"header"`
	MerkleRoot     string `json:"merkle_root"`
	BlockCandidate bool   `json:"block_candidate"`
	// Detail explains a rejection for a person; it is not part of the JSON.
	Detail string `json:"-"`
}

// Options tune the checks.
type Options struct {
	// NtimeWindow is how far past the job's ntime a share's may be; zero
	// means job.DefaultNtimeWindow.
	NtimeWindow time.Duration
}

// ErrUnusable is wrapped by Verify's errors: the input does not describe a
// share that can be judged (bad JSON, a notify or extranonce1 that cannot be
// decoded, a missing or non-positive difficulty).
var ErrUnusable = errors.New("unusable input")

// maxInput bounds the request read from stdin.
const maxInput = 1 << 20

// Read decodes a Request from r: exactly one JSON object, no unknown fields.
func Read(r io.Reader) (Request, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return Request{}, fmt.Errorf("%w: reading input: %v", ErrUnusable, err)
	}
	if len(data) > maxInput {
		return Request{}, fmt.Errorf("%w: input is larger than %d bytes", ErrUnusable, maxInput)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("%w: input is not the expected JSON object: %v", ErrUnusable, err)
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: more than one JSON value in the input", ErrUnusable)
	}
	return req, nil
}

// Verify judges the share. An error (wrapping ErrUnusable) means there is no
// verdict; otherwise the Report says whether the share is valid. When a
// rejected share's fields can still be decoded, the Report still carries its
// header, hash and difficulty as the miner would have computed them, which is
// what settles a dispute.
func Verify(req Request, opts Options) (Report, error) {
	if len(req.Notify) == 0 || string(req.Notify) == "null" {
		return Report{}, fmt.Errorf("%w: \"notify\" is missing: give the mining.notify params array", ErrUnusable)
	}
	var n stratum.Notify
	if err := n.DecodeParams(req.Notify); err != nil {
		return Report{}, fmt.Errorf("%w: notify: %v", ErrUnusable, err)
	}
	if req.Extranonce1 == nil {
		return Report{}, fmt.Errorf("%w: \"extranonce1\" is missing: give the miner's extranonce1 as hex", ErrUnusable)
	}
	en1, err := hex.DecodeString(*req.Extranonce1)
	if err != nil || len(en1) > stratum.MaxExtranonceSize {
		return Report{}, fmt.Errorf("%w: extranonce1 %q must be hex of at most %d bytes", ErrUnusable, *req.Extranonce1, stratum.MaxExtranonceSize)
	}
	var mask uint32
	if req.VersionMask != nil {
		if mask, err = stratum.ParseHexUint32("version_mask", *req.VersionMask); err != nil {
			return Report{}, fmt.Errorf("%w: %v", ErrUnusable, err)
		}
	}
	if req.Difficulty == nil {
		return Report{}, fmt.Errorf("%w: \"difficulty\" is missing: give the miner's share difficulty for this job", ErrUnusable)
	}
	diff := *req.Difficulty
	if !(diff > 0) || math.IsInf(diff, 0) {
		return Report{}, fmt.Errorf("%w: difficulty must be a positive number, got %v", ErrUnusable, diff)
	}
	if len(req.Submit) == 0 || string(req.Submit) == "null" {
		return Report{}, fmt.Errorf("%w: \"submit\" is missing: give the mining.submit params array", ErrUnusable)
	}
	j, err := job.New(&n, job.Config{})
	if err != nil {
		return Report{}, fmt.Errorf("%w: %v", ErrUnusable, err)
	}

	var sub stratum.Submit
	if err := sub.DecodeParams(req.Submit); err != nil {
		return Report{Reason: job.ReasonMalformed.String(), Detail: err.Error()}, nil
	}
	s := job.Share{Extranonce1: en1, VersionMask: mask, Difficulty: diff, NtimeWindow: opts.NtimeWindow}
	s.FromSubmit(&sub)
	res := j.Validate(&s)

	// The header as the miner hashed it. For bits outside the mask that
	// is the job version with the miner's bits set: the verdict stands, the
	// numbers show what the miner computed.
	version := res.Version
	if res.Reason == job.ReasonVersionBitsOutsideMask {
		version = n.Version&^mask | s.VersionBits
	}
	if string(sub.JobID) != n.JobID {
		// A pool looks the job up first and answers 21 whatever else is wrong.
		res.Reason = job.ReasonStale
	}
	rep := Report{Valid: res.Reason == job.ReasonNone, Reason: res.Reason.String()}
	root := j.MerkleRoot(en1, s.Extranonce2)
	hdr := j.Header(en1, s.Extranonce2, s.NTime, s.Nonce, version)
	hash := res.Hash
	if !res.Hashed {
		hash = chainhash.DoubleHashH(hdr[:])
	}
	rep.BlockHash = hash.String()
	rep.ShareDifficulty = finite(pow.HashDifficulty(&hash))
	rep.Header = hex.EncodeToString(hdr[:])
	rep.MerkleRoot = root.String()
	rep.BlockCandidate = j.BlockTarget().Accepts(&hash)
	rep.Detail = detail(res.Reason, &n, &s, &sub, rep.ShareDifficulty)
	return rep, nil
}

func detail(r job.Reason, n *stratum.Notify, s *job.Share, sub *stratum.Submit, got float64) string {
	switch r {
	case job.ReasonNone:
		return ""
	case job.ReasonVersionBitsOutsideMask:
		return fmt.Sprintf("version bits %08x set %08x outside the mask %08x", s.VersionBits, s.VersionBits&^s.VersionMask, s.VersionMask)
	case job.ReasonBadNtime:
		window := s.NtimeWindow
		if window <= 0 {
			window = job.DefaultNtimeWindow
		}
		return fmt.Sprintf("ntime %08x is outside [%08x, %08x + %v]", s.NTime, n.NTime, n.NTime, window)
	case job.ReasonStale:
		return fmt.Sprintf("the submit names job %q but the notify is job %q", sub.JobID, n.JobID)
	case job.ReasonLowDifficulty:
		return fmt.Sprintf("share difficulty %g is below the required %g", got, s.Difficulty)
	}
	return r.Message()
}

// finite keeps +Inf (the zero hash) encodable as JSON.
func finite(f float64) float64 {
	if math.IsInf(f, 1) {
		return math.MaxFloat64
	}
	return f
}
