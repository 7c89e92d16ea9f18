package stratum

import (
	"encoding/hex"
	"strconv"
)

// The methods a miner sends to its server (a proxy or a pool). Each type
// decodes its method's params with DecodeParams and encodes them with
// AppendParams, so a proxy can both answer its miners and speak to its pools.

// Limits on free-form strings, so a hostile peer cannot make the proxy keep
// or forward arbitrarily large values.
const (
	MaxJobIDLen  = 128
	MaxWorkerLen = 256
	// MaxExtranonceSize bounds extranonce1 and extranonce2, in bytes.
	MaxExtranonceSize = 32
	// MaxMerkleBranch bounds a notify's branch: 32 levels cover 2^32
	// transactions, far beyond any block.
	MaxMerkleBranch = 32
)

// Configure is mining.configure (BIP310):
// [["version-rolling", ...], {"version-rolling.mask": "1fffe000", ...}].
type Configure struct {
	Extensions []string
	Params     Object // the second param's members, in the order sent
}

// Extensions named in mining.configure.
const (
	ExtVersionRolling      = "version-rolling"
	ExtMinimumDifficulty   = "minimum-difficulty"
	ExtSubscribeExtranonce = "subscribe-extranonce"
	ExtInfo                = "info"
)

func (*Configure) Method() Method { return MethodConfigure }

// DecodeParams decodes mining.configure params. A missing second param is
// treated as an empty object.
func (c *Configure) DecodeParams(params []byte) error {
	const m = "mining.configure"
	var el [2][]byte
	n, err := elements(m, params, el[:])
	if err != nil {
		return err
	}
	if n < 1 {
		return malformed("%s: want 1 or 2 params, got %d", m, n)
	}
	if el[0][0] != '[' {
		return malformed("%s: the first param must be an array of extension names", m)
	}
	var exts [maxObjectMembers][]byte
	k, err := elements(m+" extensions", el[0], exts[:])
	if err != nil {
		return err
	}
	*c = Configure{Extensions: make([]string, 0, k)}
	for _, e := range exts[:k] {
		s, err := stringParam(m, "extension name", e)
		if err != nil {
			return err
		}
		c.Extensions = append(c.Extensions, string(s))
	}
	if n == 2 && !isNull(el[1]) {
		if c.Params, err = parseObject(m+": params", el[1]); err != nil {
			return err
		}
	}
	return nil
}

// AppendParams appends the params array.
func (c *Configure) AppendParams(dst []byte) []byte {
	dst = append(dst, '[', '[')
	for i, e := range c.Extensions {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, e)
	}
	dst = append(dst, ']', ',')
	dst = c.Params.AppendJSON(dst)
	return append(dst, ']')
}

// Requested reports whether the miner asked for extension ext.
func (c *Configure) Requested(ext string) bool {
	for _, e := range c.Extensions {
		if e == ext {
			return true
		}
	}
	return false
}

// VersionRolling returns the version-rolling mask and minimum bit count the
// miner asked for. ok is false when it did not request version rolling. A
// request without a mask means any bit (0xffffffff), per BIP310.
func (c *Configure) VersionRolling() (mask uint32, minBitCount int, ok bool, err error) {
	if !c.Requested(ExtVersionRolling) {
		return 0, 0, false, nil
	}
	mask = 0xffffffff
	if raw, found := c.Params.Get("version-rolling.mask"); found {
		if mask, err = hexUint32Param("mining.configure", "version-rolling.mask", raw); err != nil {
			return 0, 0, false, err
		}
	}
	if raw, found := c.Params.Get("version-rolling.min-bit-count"); found {
		if minBitCount, err = intParam("mining.configure", "version-rolling.min-bit-count", raw, 0, 32); err != nil {
			return 0, 0, false, err
		}
	}
	return mask, minBitCount, true, nil
}

// MinimumDifficulty returns the minimum-difficulty.value the miner asked for.
func (c *Configure) MinimumDifficulty() (d float64, ok bool, err error) {
	if !c.Requested(ExtMinimumDifficulty) {
		return 0, false, nil
	}
	raw, found := c.Params.Get("minimum-difficulty.value")
	if !found {
		return 0, false, malformed("mining.configure: minimum-difficulty requested without minimum-difficulty.value")
	}
	if d, err = numberParam("mining.configure", "minimum-difficulty.value", raw); err != nil {
		return 0, false, err
	}
	return d, true, nil
}

// Subscribe is mining.subscribe with its 0 to 4 params, any of which may be
// null: ["bmminer/2.0.0"], ["whatsminer/v1.0", "<session id>"], or Braiins OS's
// [user agent, null, "192.168.1.207:34255", null].
type Subscribe struct {
	UserAgent string
	SessionID string // extranonce1 of a session to resume; "" when absent or null
	Host      string // 3rd param: the host (often host:port) the miner dialled
	Port      string // 4th param as sent (a number or a string); "" when absent or null
}

func (*Subscribe) Method() Method { return MethodSubscribe }

func (s *Subscribe) DecodeParams(params []byte) error {
	const m = "mining.subscribe"
	var el [4][]byte
	n, err := elements(m, params, el[:])
	if err != nil {
		return err
	}
	*s = Subscribe{}
	fields := [4]*string{&s.UserAgent, &s.SessionID, &s.Host, &s.Port}
	names := [4]string{"user agent", "session id", "host", "port"}
	for i, raw := range el[:n] {
		if i == 3 && len(raw) > 0 && raw[0] != '"' && !isNull(raw) {
			p, err := intParam(m, "port", raw, 0, 65535)
			if err != nil {
				return err
			}
			s.Port = strconv.Itoa(p)
			continue
		}
		v, _, err := optStringParam(m, names[i], raw)
		if err != nil {
			return err
		}
		if len(v) > MaxWorkerLen {
			return malformed("%s: %s longer than %d bytes", m, names[i], MaxWorkerLen)
		}
		*fields[i] = string(v)
	}
	return nil
}

// AppendParams writes the user agent, then each later param up to the last
// non-empty one, empty ones as null.
func (s *Subscribe) AppendParams(dst []byte) []byte {
	vals := [4]string{s.UserAgent, s.SessionID, s.Host, s.Port}
	last := 0
	for i := range vals {
		if vals[i] != "" {
			last = i
		}
	}
	dst = append(dst, '[')
	for i := 0; i <= last; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		if vals[i] == "" && i > 0 {
			dst = append(dst, "null"...)
		} else {
			dst = appendString(dst, vals[i])
		}
	}
	return append(dst, ']')
}

// Authorize is mining.authorize ["account.worker", "password"]; the password
// may be "", null or absent.
type Authorize struct {
	User     string
	Password string
}

func (*Authorize) Method() Method { return MethodAuthorize }

func (a *Authorize) DecodeParams(params []byte) error {
	const m = "mining.authorize"
	var el [2][]byte
	n, err := elements(m, params, el[:])
	if err != nil {
		return err
	}
	if n < 1 {
		return malformed("%s: want 1 or 2 params, got %d", m, n)
	}
	user, err := stringParam(m, "user", el[0])
	if err != nil {
		return err
	}
	if len(user) > MaxWorkerLen {
		return malformed("%s: user longer than %d bytes", m, MaxWorkerLen)
	}
	*a = Authorize{User: string(user)}
	if n == 2 {
		pw, _, err := optStringParam(m, "password", el[1])
		if err != nil {
			return err
		}
		a.Password = string(pw)
	}
	return nil
}

func (a *Authorize) AppendParams(dst []byte) []byte {
	dst = append(dst, '[')
	dst = appendString(dst, a.User)
	dst = append(dst, ',')
	dst = appendString(dst, a.Password)
	return append(dst, ']')
}

// Extranonce is an extranonce of at most MaxExtranonceSize bytes held by
// value, so decoding a submit needs no allocation. The zero value is empty.
type Extranonce struct {
	n uint8
	b [MaxExtranonceSize]byte
}

// MakeExtranonce concatenates parts (for a proxy: the miner's prefix and its
// extranonce2) into an Extranonce.
func MakeExtranonce(parts ...[]byte) (Extranonce, error) {
	var e Extranonce
	for _, p := range parts {
		if int(e.n)+len(p) > MaxExtranonceSize {
			return Extranonce{}, malformed("extranonce longer than %d bytes", MaxExtranonceSize)
		}
		e.n += uint8(copy(e.b[e.n:], p))
	}
	return e, nil
}

// Bytes returns the extranonce's bytes; the slice aliases e.
func (e *Extranonce) Bytes() []byte { return e.b[:e.n] }

// Len returns the extranonce's length in bytes.
func (e *Extranonce) Len() int { return int(e.n) }

// String returns the extranonce in lowercase hex.
func (e Extranonce) String() string { return hex.EncodeToString(e.b[:e.n]) }

// Submit is mining.submit [worker, job_id, extranonce2, ntime, nonce] with an
// optional sixth version_bits (BIP310).
//
// Decoding is allocation-free: Worker and JobID alias the params (the line)
// unless they contained JSON escapes, and stay valid only until the line
// buffer is reused. Look a job up with m[string(s.JobID)], which does not
// allocate, and copy what must outlive the line. After a decoding error the
// fields are unspecified.
type Submit struct {
	Worker         []byte
	JobID          []byte
	Extranonce2    Extranonce
	NTime          uint32
	Nonce          uint32
	VersionBits    uint32
	HasVersionBits bool // the sixth param was present
}

func (*Submit) Method() Method { return MethodSubmit }

func (s *Submit) DecodeParams(params []byte) error {
	const m = "mining.submit"
	var el [6][]byte
	n, err := elements(m, params, el[:])
	if err != nil {
		return err
	}
	if n != 5 && n != 6 {
		return malformed("%s: want 5 or 6 params, got %d", m, n)
	}
	if s.Worker, err = stringParam(m, "worker", el[0]); err != nil {
		return err
	}
	if len(s.Worker) > MaxWorkerLen {
		return malformed("%s: worker longer than %d bytes", m, MaxWorkerLen)
	}
	if s.JobID, err = stringParam(m, "job_id", el[1]); err != nil {
		return err
	}
	if len(s.JobID) > MaxJobIDLen {
		return malformed("%s: job_id longer than %d bytes", m, MaxJobIDLen)
	}
	en2, err := stringParam(m, "extranonce2", el[2])
	if err != nil {
		return err
	}
	if herr := checkHex(en2, 0, 2*MaxExtranonceSize); herr != nil {
		herr.Field = m + ": extranonce2"
		return herr
	}
	s.Extranonce2.n = uint8(len(en2) / 2)
	decodeHexInto(s.Extranonce2.b[:s.Extranonce2.n], en2)
	if s.NTime, err = hexUint32Param(m, "ntime", el[3]); err != nil {
		return err
	}
	if s.Nonce, err = hexUint32Param(m, "nonce", el[4]); err != nil {
		return err
	}
	s.VersionBits, s.HasVersionBits = 0, n == 6
	if n == 6 {
		if s.VersionBits, err = hexUint32Param(m, "version_bits", el[5]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Submit) AppendParams(dst []byte) []byte {
	dst = append(dst, '[')
	dst = appendString(dst, s.Worker)
	dst = append(dst, ',')
	dst = appendString(dst, s.JobID)
	dst = append(dst, ',', '"')
	dst = appendHex(dst, s.Extranonce2.Bytes())
	dst = append(dst, '"', ',', '"')
	dst = appendHexUint32(dst, s.NTime)
	dst = append(dst, '"', ',', '"')
	dst = appendHexUint32(dst, s.Nonce)
	dst = append(dst, '"')
	if s.HasVersionBits {
		dst = append(dst, ',', '"')
		dst = appendHexUint32(dst, s.VersionBits)
		dst = append(dst, '"')
	}
	return append(dst, ']')
}

// SuggestDifficulty is mining.suggest_difficulty [difficulty]. Whatsminers
// send it before subscribing; always answer it.
type SuggestDifficulty struct {
	Difficulty float64
}

func (*SuggestDifficulty) Method() Method { return MethodSuggestDifficulty }

func (d *SuggestDifficulty) DecodeParams(params []byte) error {
	v, err := difficultyParams("mining.suggest_difficulty", params)
	d.Difficulty = v
	return err
}

func (d *SuggestDifficulty) AppendParams(dst []byte) []byte {
	return append(appendNumber(append(dst, '['), d.Difficulty), ']')
}

// difficultyParams decodes [difficulty] with a positive, finite difficulty.
func difficultyParams(m string, params []byte) (float64, error) {
	var el [1][]byte
	if err := exactElements(m, params, el[:]); err != nil {
		return 0, err
	}
	d, err := numberParam(m, "difficulty", el[0])
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, malformed("%s: difficulty must be positive, got %s", m, el[0])
	}
	return d, nil
}

// SuggestTarget is mining.suggest_target ["<64 hex digits>"].
type SuggestTarget struct {
	Target [32]byte // big-endian, as the hex reads
}

func (*SuggestTarget) Method() Method { return MethodSuggestTarget }

func (t *SuggestTarget) DecodeParams(params []byte) error {
	const m = "mining.suggest_target"
	var el [1][]byte
	if err := exactElements(m, params, el[:]); err != nil {
		return err
	}
	b, err := hexBytesParam(m, "target", el[0], 32, 32)
	if err != nil {
		return err
	}
	copy(t.Target[:], b)
	return nil
}

func (t *SuggestTarget) AppendParams(dst []byte) []byte {
	dst = append(dst, '[', '"')
	dst = appendHex(dst, t.Target[:])
	return append(dst, '"', ']')
}

// ExtranonceSubscribe is mining.extranonce.subscribe [] (NiceHash "xnsub"):
// the miner accepts mining.set_extranonce.
type ExtranonceSubscribe struct{}

func (*ExtranonceSubscribe) Method() Method { return MethodExtranonceSubscribe }

// DecodeParams accepts any params array; the method takes none.
func (*ExtranonceSubscribe) DecodeParams(params []byte) error {
	return noParams("mining.extranonce.subscribe", params)
}

func (*ExtranonceSubscribe) AppendParams(dst []byte) []byte { return append(dst, '[', ']') }

// Ping is mining.ping []; answer with the result "pong".
type Ping struct{}

func (*Ping) Method() Method { return MethodPing }

// DecodeParams accepts any params array; the method takes none.
func (*Ping) DecodeParams(params []byte) error { return noParams("mining.ping", params) }

func (*Ping) AppendParams(dst []byte) []byte { return append(dst, '[', ']') }

// noParams checks params is absent, null or a valid array, ignoring its
// contents.
func noParams(m string, params []byte) error {
	s := scanner{buf: params}
	switch s.peek() {
	case 0:
		return nil
	case 'n', '[':
		if _, err := s.value(0); err != nil {
			return err
		}
		if s.peek() != 0 {
			return s.errorf("trailing data after params")
		}
		return nil
	}
	return malformed("%s: params must be an array", m)
}
