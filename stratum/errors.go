package stratum

import (
	"errors"
	"fmt"
	"strconv"
)

// Stratum error codes, as pools and firmware use them in the first element of
// an error triple [code, "message", null].
const (
	CodeOther          = 20 // other or unknown error; also malformed requests
	CodeJobNotFound    = 21 // job not found: the share is stale
	CodeDuplicateShare = 22
	CodeLowDifficulty  = 23
	CodeUnauthorized   = 24 // unauthorized worker
	CodeNotSubscribed  = 25
	// CodeMethodNotFound is JSON-RPC's code for an unknown method; some
	// servers use it instead of CodeOther.
	CodeMethodNotFound = -32601
)

// ErrMalformed is wrapped by every error about a line or params that are not
// valid Stratum: bad JSON, wrong param count or type, bad hex. A server
// answers such a request with CodeOther and keeps the connection.
var ErrMalformed = errors.New("malformed stratum message")

// ErrLineTooLong is returned by Reader.ReadLine for a line longer than the
// reader's limit. The reader stops there: close the connection.
var ErrLineTooLong = errors.New("stratum line exceeds the maximum length")

// Error is a Stratum error as carried in a response's "error" member.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string {
	return "stratum error " + strconv.Itoa(e.Code) + ": " + e.Message
}

// HexError reports a hex field that has the wrong length or a character
// outside 0-9a-fA-F. It wraps ErrMalformed.
type HexError struct {
	Field string // e.g. "extranonce2"
	// Want is the expected number of hex digits; 0 when any even count up
	// to Max is allowed.
	Want, Max int
	Got       int  // the number of characters received
	Bad       byte // the offending character, when BadAt >= 0
	BadAt     int  // index of Bad, or -1 for a length error
}

func (e *HexError) Error() string {
	switch {
	case e.BadAt >= 0:
		return fmt.Sprintf("%s: %q at position %d is not a hex digit", e.Field, e.Bad, e.BadAt)
	case e.Want > 0:
		return fmt.Sprintf("%s: want %d hex digits, got %d", e.Field, e.Want, e.Got)
	case e.Got%2 != 0:
		return fmt.Sprintf("%s: odd number of hex digits (%d)", e.Field, e.Got)
	default:
		return fmt.Sprintf("%s: %d hex digits is more than the maximum of %d", e.Field, e.Got, e.Max)
	}
}

func (e *HexError) Unwrap() error { return ErrMalformed }

// malformed returns an error wrapping ErrMalformed.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
