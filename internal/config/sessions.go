package config

import (
	"fmt"
	"math"
	"strconv"
)

// SessionSize is a pool's miners_per_session: SessionAuto, or how many
// miners at most share one upstream session. In TOML it is "auto" or a
// whole number.
type SessionSize int

// SessionAuto (miners_per_session = "auto", the default) lets one session
// carry as many miners as the pool's extranonce2 allows (see [[server]]
// extranonce2_size), up to 65,536.
const SessionAuto SessionSize = -1

// MaxMinersPerSession is the largest explicit miners_per_session.
const MaxMinersPerSession = 1 << 24

// IsAuto reports whether the size follows the pool's extranonce.
func (s SessionSize) IsAuto() bool { return s == SessionAuto }

// Limit returns the explicit number of miners, or 0 for "auto".
func (s SessionSize) Limit() int {
	if s.IsAuto() {
		return 0
	}
	return int(s)
}

func (s SessionSize) String() string {
	if s.IsAuto() {
		return "auto"
	}
	return strconv.Itoa(int(s))
}

// UnmarshalTOML accepts "auto" or a whole number. Zero and negative
// numbers are refused here: a zero left in the field would read as "key
// absent" (see setIf).
func (s *SessionSize) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		if x == "auto" {
			*s = SessionAuto
			return nil
		}
		return fmt.Errorf("%q is not allowed; write \"auto\" or a number of miners from 1 to %d", x, MaxMinersPerSession)
	case int64:
		if x < 1 || x > MaxMinersPerSession {
			return fmt.Errorf("%d is out of range; write \"auto\" or a number of miners from 1 to %d", x, MaxMinersPerSession)
		}
		*s = SessionSize(x)
		return nil
	case float64:
		if x == math.Trunc(x) {
			return fmt.Errorf("%v is a float; write a whole number without a decimal point, or \"auto\"", x)
		}
	}
	return fmt.Errorf("%v is not allowed; write \"auto\" or a number of miners from 1 to %d", v, MaxMinersPerSession)
}

// MarshalText writes "auto" or the number.
func (s SessionSize) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
