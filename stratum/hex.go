package stratum

import (
	"encoding/binary"

	"github.com/btcsuite/btcd/chainhash/v2"
)

const hexdigits = "0123456789abcdef"

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// checkHex validates s as hex: exactly want digits when want > 0, otherwise
// an even count of at most max digits. The caller sets the error's Field.
func checkHex(s []byte, want, max int) *HexError {
	if (want > 0 && len(s) != want) || (want == 0 && (len(s)%2 != 0 || len(s) > max)) {
		return &HexError{Want: want, Max: max, Got: len(s), BadAt: -1}
	}
	for i, c := range s {
		if hexVal(c) < 0 {
			return &HexError{Want: want, Max: max, Got: len(s), Bad: c, BadAt: i}
		}
	}
	return nil
}

// decodeHexInto decodes validated hex s into dst, which must hold len(s)/2 bytes.
func decodeHexInto(dst, s []byte) {
	for i := 0; i < len(dst); i++ {
		dst[i] = byte(hexVal(s[2*i])<<4 | hexVal(s[2*i+1]))
	}
}

// hexUint32Param decodes a param that must be a string of exactly eight hex
// digits: a 32-bit value written big-endian, as Stratum writes version,
// nbits, ntime, nonce, version bits and version masks.
func hexUint32Param(method, field string, raw []byte) (uint32, error) {
	s, err := stringParam(method, field, raw)
	if err != nil {
		return 0, err
	}
	v, herr := parseHexUint32(s)
	if herr != nil {
		herr.Field = method + ": " + field
		return 0, herr
	}
	return v, nil
}

// parseHexUint32 parses exactly eight hex digits. On failure it returns a
// HexError whose Field the caller fills in, so the success path builds no
// strings.
func parseHexUint32(s []byte) (uint32, *HexError) {
	if len(s) != 8 {
		return 0, &HexError{Want: 8, Got: len(s), BadAt: -1}
	}
	var v uint32
	for i, c := range s {
		d := hexVal(c)
		if d < 0 {
			return 0, &HexError{Want: 8, Got: len(s), Bad: c, BadAt: i}
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

// ParseHexUint32 parses eight hex digits as Stratum writes 32-bit fields
// (big-endian), e.g. a version mask "1fffe000". field names the value in the
// error, which wraps ErrMalformed.
func ParseHexUint32(field, s string) (uint32, error) {
	v, err := parseHexUint32([]byte(s))
	if err != nil {
		err.Field = field
		return 0, err
	}
	return v, nil
}

// hexBytesParam decodes a hex string param of an even length of at most max
// bytes (want bytes exactly when want > 0) into a new slice.
func hexBytesParam(method, field string, raw []byte, want, max int) ([]byte, error) {
	s, err := stringParam(method, field, raw)
	if err != nil {
		return nil, err
	}
	if herr := checkHex(s, 2*want, 2*max); herr != nil {
		herr.Field = method + ": " + field
		return nil, herr
	}
	b := make([]byte, len(s)/2)
	decodeHexInto(b, s)
	return b, nil
}

func appendHex(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexdigits[c>>4], hexdigits[c&0xf])
	}
	return dst
}

func appendHexUint32(dst []byte, v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return appendHex(dst, b[:])
}

// AppendHexUint32 appends v as eight lowercase hex digits, big-endian, the
// way Stratum writes 32-bit fields.
func AppendHexUint32(dst []byte, v uint32) []byte { return appendHexUint32(dst, v) }

// The prevhash of mining.notify is the previous block hash in internal byte
// order with the bytes of each 4-byte word reversed.

func swapWords(dst, src *[32]byte) {
	for w := 0; w < 32; w += 4 {
		dst[w], dst[w+1], dst[w+2], dst[w+3] = src[w+3], src[w+2], src[w+1], src[w]
	}
}

func appendPrevHash(dst []byte, h *chainhash.Hash) []byte {
	var b [32]byte
	swapWords(&b, (*[32]byte)(h))
	return appendHex(dst, b[:])
}

func appendHash(dst []byte, h *chainhash.Hash) []byte { return appendHex(dst, h[:]) }

// hashParam decodes 64 hex digits into a hash, byte for byte (internal order,
// as merkle branches are sent).
func hashParam(method, field string, raw []byte, h *chainhash.Hash) error {
	s, err := stringParam(method, field, raw)
	if err != nil {
		return err
	}
	if herr := checkHex(s, 64, 0); herr != nil {
		herr.Field = method + ": " + field
		return herr
	}
	decodeHexInto(h[:], s)
	return nil
}
