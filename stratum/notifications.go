package stratum

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/btcsuite/btcd/chainhash/v2"
)

// The methods a server (a pool, or a proxy towards its miners) sends.

// SetDifficulty is mining.set_difficulty [difficulty]. It applies to jobs
// sent after it; fractional values occur (16383.75).
type SetDifficulty struct {
	Difficulty float64
}

func (*SetDifficulty) Method() Method { return MethodSetDifficulty }

func (d *SetDifficulty) DecodeParams(params []byte) error {
	v, err := difficultyParams("mining.set_difficulty", params)
	d.Difficulty = v
	return err
}

func (d *SetDifficulty) AppendParams(dst []byte) []byte {
	return append(appendNumber(append(dst, '['), d.Difficulty), ']')
}

// Notify is mining.notify [job_id, prevhash, coinb1, coinb2, [branch...],
// version, nbits, ntime, clean_jobs], decoded to the byte orders Bitcoin uses
// internally (field notes §4).
type Notify struct {
	JobID string
	// PrevHash is the previous block hash in internal byte order: the
	// wire's per-word byte swap is undone. PrevHash.String() is the
	// block-explorer form.
	PrevHash chainhash.Hash
	// Coinb1 and Coinb2 are the legacy coinbase serialization around the
	// extranonce: coinbase = Coinb1 ‖ extranonce1 ‖ extranonce2 ‖ Coinb2.
	Coinb1, Coinb2 []byte
	// MerkleBranch holds the coinbase's merkle path, internal byte order.
	MerkleBranch []chainhash.Hash
	Version      uint32
	NBits        uint32
	NTime        uint32
	CleanJobs    bool
}

func (*Notify) Method() Method { return MethodNotify }

// DecodeParams decodes the nine params, validating every hex field. The
// result owns its memory.
func (n *Notify) DecodeParams(params []byte) error {
	const m = "mining.notify"
	var el [9][]byte
	if err := exactElements(m, params, el[:]); err != nil {
		return err
	}
	var out Notify
	id, err := stringParam(m, "job_id", el[0])
	if err != nil {
		return err
	}
	if len(id) == 0 || len(id) > MaxJobIDLen {
		return malformed("%s: job_id must be 1 to %d bytes, got %d", m, MaxJobIDLen, len(id))
	}
	out.JobID = string(id)
	var wire chainhash.Hash
	if err := hashParam(m, "prevhash", el[1], &wire); err != nil {
		return err
	}
	swapWords((*[32]byte)(&out.PrevHash), (*[32]byte)(&wire))
	// A coinbase is at most a block; in practice the line cap bounds it.
	const maxCoinbase = 1 << 20
	if out.Coinb1, err = hexBytesParam(m, "coinb1", el[2], 0, maxCoinbase); err != nil {
		return err
	}
	if out.Coinb2, err = hexBytesParam(m, "coinb2", el[3], 0, maxCoinbase); err != nil {
		return err
	}
	if len(el[4]) == 0 || el[4][0] != '[' {
		return malformed("%s: merkle_branch must be an array", m)
	}
	var br [MaxMerkleBranch][]byte
	nb, err := elements(m+" merkle_branch", el[4], br[:])
	if err != nil {
		return err
	}
	if nb > 0 {
		out.MerkleBranch = make([]chainhash.Hash, nb)
	}
	for i := range nb {
		if err := hashParam(m, "merkle_branch", br[i], &out.MerkleBranch[i]); err != nil {
			var he *HexError
			if errors.As(err, &he) { // name the element; built only on error
				he.Field = fmt.Sprintf("%s: merkle_branch[%d]", m, i)
			}
			return err
		}
	}
	if out.Version, err = hexUint32Param(m, "version", el[5]); err != nil {
		return err
	}
	if out.NBits, err = hexUint32Param(m, "nbits", el[6]); err != nil {
		return err
	}
	if out.NTime, err = hexUint32Param(m, "ntime", el[7]); err != nil {
		return err
	}
	if out.CleanJobs, err = boolParam(m, "clean_jobs", el[8]); err != nil {
		return err
	}
	*n = out
	return nil
}

// AppendParams writes the params with lowercase hex. Encoding needs no
// allocation beyond growing dst.
func (n *Notify) AppendParams(dst []byte) []byte {
	dst = append(dst, '[')
	dst = appendString(dst, n.JobID)
	dst = append(dst, ',', '"')
	dst = appendPrevHash(dst, &n.PrevHash)
	dst = append(dst, '"', ',', '"')
	dst = appendHex(dst, n.Coinb1)
	dst = append(dst, '"', ',', '"')
	dst = appendHex(dst, n.Coinb2)
	dst = append(dst, '"', ',', '[')
	for i := range n.MerkleBranch {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = appendHash(dst, &n.MerkleBranch[i])
		dst = append(dst, '"')
	}
	dst = append(dst, ']', ',', '"')
	dst = appendHexUint32(dst, n.Version)
	dst = append(dst, '"', ',', '"')
	dst = appendHexUint32(dst, n.NBits)
	dst = append(dst, '"', ',', '"')
	dst = appendHexUint32(dst, n.NTime)
	dst = append(dst, '"', ',')
	dst = strconv.AppendBool(dst, n.CleanJobs)
	return append(dst, ']')
}

// SetVersionMask is mining.set_version_mask ["1fffe000"]; it takes effect
// immediately.
type SetVersionMask struct {
	Mask uint32
}

func (*SetVersionMask) Method() Method { return MethodSetVersionMask }

func (v *SetVersionMask) DecodeParams(params []byte) error {
	const m = "mining.set_version_mask"
	var el [1][]byte
	if err := exactElements(m, params, el[:]); err != nil {
		return err
	}
	mask, err := hexUint32Param(m, "mask", el[0])
	v.Mask = mask
	return err
}

func (v *SetVersionMask) AppendParams(dst []byte) []byte {
	dst = append(dst, '[', '"')
	dst = appendHexUint32(dst, v.Mask)
	return append(dst, '"', ']')
}

// SetExtranonce is mining.set_extranonce [extranonce1, extranonce2_size].
// Send it only to miners that sent mining.extranonce.subscribe; it applies
// from the next notify.
type SetExtranonce struct {
	Extranonce1     []byte
	Extranonce2Size int
}

func (*SetExtranonce) Method() Method { return MethodSetExtranonce }

func (s *SetExtranonce) DecodeParams(params []byte) error {
	const m = "mining.set_extranonce"
	var el [2][]byte
	if err := exactElements(m, params, el[:]); err != nil {
		return err
	}
	en1, err := hexBytesParam(m, "extranonce1", el[0], 0, MaxExtranonceSize)
	if err != nil {
		return err
	}
	size, err := intParam(m, "extranonce2_size", el[1], 0, MaxExtranonceSize)
	if err != nil {
		return err
	}
	*s = SetExtranonce{Extranonce1: en1, Extranonce2Size: size}
	return nil
}

func (s *SetExtranonce) AppendParams(dst []byte) []byte {
	dst = append(dst, '[', '"')
	dst = appendHex(dst, s.Extranonce1)
	dst = append(dst, '"', ',')
	dst = strconv.AppendInt(dst, int64(s.Extranonce2Size), 10)
	return append(dst, ']')
}

// Reconnect is client.reconnect in either shape: [] (reconnect to the same
// server) or [host, port, wait], where port may arrive as a number or a
// string and the later params may be missing. Many clients ignore host and
// port.
type Reconnect struct {
	Host string
	Port int // 0 when absent
	Wait int // seconds to wait before reconnecting; 0 when absent
}

func (*Reconnect) Method() Method { return MethodReconnect }

func (r *Reconnect) DecodeParams(params []byte) error {
	const m = "client.reconnect"
	var el [3][]byte
	n, err := elements(m, params, el[:])
	if err != nil {
		return err
	}
	var out Reconnect
	if n >= 1 {
		host, _, err := optStringParam(m, "host", el[0])
		if err != nil {
			return err
		}
		if len(host) > 255 {
			return malformed("%s: host longer than 255 bytes", m)
		}
		out.Host = string(host)
	}
	if n >= 2 && !isNull(el[1]) {
		raw := el[1]
		if raw[0] == '"' {
			if raw, err = unquote(raw); err != nil {
				return err
			}
		}
		if out.Port, err = intParam(m, "port", raw, 0, 65535); err != nil {
			return err
		}
	}
	if n == 3 && !isNull(el[2]) {
		if out.Wait, err = intParam(m, "wait", el[2], 0, 1<<31-1); err != nil {
			return err
		}
	}
	*r = out
	return nil
}

// AppendParams writes [] when Host, Port and Wait are all zero, otherwise
// [host, port, wait].
func (r *Reconnect) AppendParams(dst []byte) []byte {
	if r.Host == "" && r.Port == 0 && r.Wait == 0 {
		return append(dst, '[', ']')
	}
	dst = append(dst, '[')
	dst = appendString(dst, r.Host)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(r.Port), 10)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(r.Wait), 10)
	return append(dst, ']')
}

// ShowMessage is client.show_message [text].
type ShowMessage struct {
	Text string
}

func (*ShowMessage) Method() Method { return MethodShowMessage }

func (s *ShowMessage) DecodeParams(params []byte) error {
	const m = "client.show_message"
	var el [1][]byte
	if err := exactElements(m, params, el[:]); err != nil {
		return err
	}
	text, err := stringParam(m, "text", el[0])
	if err != nil {
		return err
	}
	s.Text = string(text)
	return nil
}

func (s *ShowMessage) AppendParams(dst []byte) []byte {
	return append(appendString(append(dst, '['), s.Text), ']')
}

// GetVersion is client.get_version [], a request the miner answers with its
// version string.
type GetVersion struct{}

func (*GetVersion) Method() Method { return MethodGetVersion }

// DecodeParams accepts any params array; the method takes none.
func (*GetVersion) DecodeParams(params []byte) error {
	return noParams("client.get_version", params)
}

func (*GetVersion) AppendParams(dst []byte) []byte { return append(dst, '[', ']') }
