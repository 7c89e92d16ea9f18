package stratum

import (
	"strconv"
)

// idInline is the longest id kept without a heap allocation; every number
// and nearly every string id a miner sends fits.
const idInline = 30

// maxIDLen bounds the raw text of an id; longer ids are rejected as hostile.
const maxIDLen = 256

// ID is a JSON-RPC request id exactly as received: a number, a string or
// null, kept as its raw JSON text so a response echoes it byte for byte
// ("id":007 stays 007, "id":"a\u0062" stays escaped). Its zero value is the
// null id. An ID owns its bytes: it stays valid after the line it came from
// is reused, so it can wait for an upstream verdict. IDs are comparable with
// ==; two ids are equal when their raw texts are.
type ID struct {
	n      uint8
	inline [idInline]byte
	long   string
}

// NumberID returns the id n, as a client numbering its own requests uses.
func NumberID(n uint64) ID {
	var id ID
	id.n = uint8(len(strconv.AppendUint(id.inline[:0], n, 10)))
	return id
}

// StringID returns a string id with the value s.
func StringID(s string) ID {
	id, _ := ParseID(appendString(nil, s))
	return id
}

// ParseID validates raw as a JSON number, string or null and returns it as an
// ID. Anything else (objects, arrays, booleans) is malformed.
func ParseID(raw []byte) (ID, error) {
	if len(raw) == 0 || isNull(raw) {
		return ID{}, nil
	}
	if len(raw) > maxIDLen {
		return ID{}, malformed("id longer than %d bytes", maxIDLen)
	}
	s := scanner{buf: raw}
	c := raw[0]
	switch {
	case c == '"':
		if _, err := s.str(); err != nil {
			return ID{}, err
		}
	case c == '-' || (c >= '0' && c <= '9'):
		if err := s.number(); err != nil {
			return ID{}, err
		}
	default:
		return ID{}, malformed("id must be a number, a string or null")
	}
	if s.pos != len(raw) {
		return ID{}, malformed("id must be a single JSON value")
	}
	var id ID
	if len(raw) <= idInline {
		id.n = uint8(copy(id.inline[:], raw))
	} else {
		id.long = string(raw)
	}
	return id, nil
}

// IsNull reports whether id is the null id (or absent).
func (id *ID) IsNull() bool { return id.n == 0 && id.long == "" }

// Raw returns the id's JSON text; "null" for the null id. The slice aliases
// id when the id is short: do not modify it.
func (id *ID) Raw() []byte {
	if id.long != "" {
		return []byte(id.long)
	}
	if id.n == 0 {
		return []byte("null")
	}
	return id.inline[:id.n]
}

// AppendJSON appends the id's JSON text to dst.
func (id *ID) AppendJSON(dst []byte) []byte {
	switch {
	case id.long != "":
		return append(dst, id.long...)
	case id.n == 0:
		return append(dst, "null"...)
	}
	return append(dst, id.inline[:id.n]...)
}

// String returns the id's JSON text, e.g. `4`, `"abc"` or `null`.
func (id ID) String() string { return string(id.AppendJSON(nil)) }

// Uint64 returns the id's value when it is a non-negative integer number
// written without fraction or exponent, as NumberID writes it.
func (id *ID) Uint64() (uint64, bool) {
	if id.n == 0 || id.long != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(string(id.inline[:id.n]), 10, 64)
	return n, err == nil
}
