package stratum

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"
)

// A small, strict JSON scanner. Stratum lines are parsed by locating the raw
// spans of the few members that matter and validating everything else in
// passing, so a well-formed line costs no allocation. The grammar is RFC 8259;
// nesting is capped at maxDepth so hostile input cannot exhaust the stack.

const maxDepth = 64

type scanner struct {
	buf []byte
	pos int
}

func (s *scanner) errorf(what string) error {
	return malformed("invalid JSON at byte %d: %s", s.pos, what)
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.buf) {
		switch s.buf[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end of input.
func (s *scanner) peek() byte {
	if s.pos < len(s.buf) && s.buf[s.pos] > ' ' { // the usual case: compact JSON
		return s.buf[s.pos]
	}
	s.skipSpace()
	if s.pos < len(s.buf) {
		return s.buf[s.pos]
	}
	return 0
}

// value skips one JSON value, validating it, and returns its raw span.
func (s *scanner) value(depth int) ([]byte, error) {
	c := s.peek()
	start := s.pos
	var err error
	switch {
	case c == '"':
		_, err = s.str()
	case c == '{' || c == '[':
		err = s.composite(depth)
	case c == '-' || (c >= '0' && c <= '9'):
		err = s.number()
	case c == 't':
		err = s.literal("true")
	case c == 'f':
		err = s.literal("false")
	case c == 'n':
		err = s.literal("null")
	case c == 0:
		return nil, s.errorf("unexpected end of input")
	default:
		return nil, s.errorf("unexpected character " + strconv.QuoteRune(rune(c)))
	}
	if err != nil {
		return nil, err
	}
	return s.buf[start:s.pos], nil
}

func (s *scanner) composite(depth int) error {
	if depth >= maxDepth {
		return s.errorf("nesting deeper than " + strconv.Itoa(maxDepth))
	}
	open := s.buf[s.pos]
	closing := byte(']')
	if open == '{' {
		closing = '}'
	}
	s.pos++
	if s.peek() == closing {
		s.pos++
		return nil
	}
	for {
		if open == '{' {
			if s.peek() != '"' {
				return s.errorf("object key must be a string")
			}
			if _, err := s.str(); err != nil {
				return err
			}
			if s.peek() != ':' {
				return s.errorf("missing ':' after object key")
			}
			s.pos++
		}
		if _, err := s.value(depth + 1); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case closing:
			s.pos++
			return nil
		default:
			return s.errorf("missing ',' or closing bracket")
		}
	}
}

func (s *scanner) literal(lit string) error {
	if len(s.buf)-s.pos < len(lit) || string(s.buf[s.pos:s.pos+len(lit)]) != lit {
		return s.errorf("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

func (s *scanner) number() error {
	b, i := s.buf, s.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		s.pos = i
		return s.errorf("invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			s.pos = i
			return s.errorf("invalid number")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			s.pos = i
			return s.errorf("invalid number")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	s.pos = i
	return nil
}

// str skips a string starting at the opening quote and reports whether it
// holds escapes.
func (s *scanner) str() (escaped bool, err error) {
	b := s.buf
	i := s.pos + 1
	for i < len(b) {
		// Skip eight plain bytes at a time: none is '"', '\\' or a
		// control character. The tests are exact, so a hit just falls
		// through to the byte loop below.
		for i+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				s.pos = i
				return false, s.errorf("unterminated escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
					s.pos = i
					return false, s.errorf("invalid \\u escape")
				}
				i += 6
			default:
				s.pos = i
				return false, s.errorf("invalid escape")
			}
		case c < 0x20:
			s.pos = i
			return false, s.errorf("control character in string")
		default:
			i++
		}
	}
	s.pos = i
	return false, s.errorf("unterminated string")
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain8 reports whether none of the eight bytes of x is '"', '\\' or below
// 0x20, using the exact "has zero byte" and "has byte less than" tests.
func plain8(x uint64) bool {
	quote := x ^ ('"' * ones)
	bslash := x ^ ('\\' * ones)
	hit := (x-0x20*ones)&^x | (quote-ones)&^quote | (bslash-ones)&^bslash
	return hit&highs == 0
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if hexVal(c) < 0 {
			return false
		}
	}
	return true
}

// unquote returns the contents of the raw JSON string raw (quotes included).
// Without escapes the result aliases raw; with escapes it is a new slice.
func unquote(raw []byte) ([]byte, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, malformed("want a JSON string")
	}
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		return in, nil
	}
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); {
		c := in[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		// The scanner validated escapes; re-check bounds anyway so unquote is
		// safe on its own.
		if i+1 >= len(in) {
			return nil, malformed("unterminated escape")
		}
		switch in[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+6 > len(in) || !isHex4(in[i+2:i+6]) {
				return nil, malformed("invalid \\u escape")
			}
			r := rune(hex4(in[i+2 : i+6]))
			i += 6
			if utf16IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(in) && in[i] == '\\' && in[i+1] == 'u' && isHex4(in[i+2:i+6]) {
					r2 = rune(hex4(in[i+2 : i+6]))
				}
				if dec := utf16Decode(r, r2); dec != utf8.RuneError {
					i += 6
					r = dec
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, in[i+1])
		}
		i += 2
	}
	return out, nil
}

func hex4(b []byte) uint16 {
	var v uint16
	for _, c := range b {
		v = v<<4 | uint16(hexVal(c))
	}
	return v
}

func utf16IsSurrogate(r rune) bool { return r >= 0xd800 && r < 0xe000 }

func utf16Decode(r1, r2 rune) rune {
	if r1 >= 0xd800 && r1 < 0xdc00 && r2 >= 0xdc00 && r2 < 0xe000 {
		return (r1-0xd800)<<10 | (r2 - 0xdc00) + 0x10000
	}
	return utf8.RuneError
}

// exactElements splits raw into out and fails unless it holds exactly
// len(out) params.
func exactElements(method string, raw []byte, out [][]byte) error {
	n, err := elements(method, raw, out)
	if err != nil {
		return err
	}
	if n != len(out) {
		if len(out) == 1 {
			return malformed("%s: want 1 param, got %d", method, n)
		}
		return malformed("%s: want %d params, got %d", method, len(out), n)
	}
	return nil
}

// elements splits the raw JSON array raw into out and returns the count.
// Absent params (nil) and null count as an empty array. An array longer than
// out is an error naming method.
func elements(method string, raw []byte, out [][]byte) (int, error) {
	s := scanner{buf: raw}
	switch s.peek() {
	case 0:
		return 0, nil
	case 'n':
		if err := s.literal("null"); err != nil {
			return 0, err
		}
		return 0, nil
	case '[':
	default:
		return 0, malformed("%s: params must be an array", method)
	}
	s.pos++
	if s.peek() == ']' {
		return 0, nil
	}
	n := 0
	for {
		v, err := s.value(1)
		if err != nil {
			return 0, err
		}
		if n == len(out) {
			return 0, malformed("%s: more than %d params", method, len(out))
		}
		out[n] = v
		n++
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			return n, nil
		default:
			return 0, s.errorf("missing ',' or ']' in params")
		}
	}
}

func isNull(raw []byte) bool { return string(raw) == "null" }

// stringParam decodes a JSON string param; field names it in errors.
func stringParam(method, field string, raw []byte) ([]byte, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return nil, malformed("%s: %s must be a string", method, field)
	}
	return unquote(raw)
}

// optStringParam decodes a string or null (nil result) param.
func optStringParam(method, field string, raw []byte) ([]byte, bool, error) {
	if isNull(raw) {
		return nil, false, nil
	}
	b, err := stringParam(method, field, raw)
	return b, err == nil, err
}

// numberParam decodes a finite JSON number param.
func numberParam(method, field string, raw []byte) (float64, error) {
	if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		return 0, malformed("%s: %s must be a number", method, field)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, malformed("%s: %s: %s is not a finite number", method, field, raw)
	}
	return f, nil
}

// intParam decodes an integer param within [lo, hi].
func intParam(method, field string, raw []byte, lo, hi int) (int, error) {
	if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		return 0, malformed("%s: %s must be an integer", method, field)
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil || n < lo || n > hi {
		return 0, malformed("%s: %s: %s is not an integer between %d and %d", method, field, raw, lo, hi)
	}
	return n, nil
}

func boolParam(method, field string, raw []byte) (bool, error) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, malformed("%s: %s must be true or false", method, field)
}

// appendString appends s as a JSON string, escaping only what JSON requires
// (quote, backslash, control characters), so names travel byte for byte.
func appendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	const hexdigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendNumber appends f in plain decimal notation (no exponent), which every
// miner's JSON parser reads; integral values print without a fraction.
func appendNumber(dst []byte, f float64) []byte {
	return strconv.AppendFloat(dst, f, 'f', -1, 64)
}
