// Package logkeep marks log entries that a rate limiter must never drop.
//
// proxyd rate-limits repetitive log lines (one refused connection per line
// would otherwise push a failover past journald's rate limit). A few entries
// must always reach the journal however many arrive: failover and fail-back,
// switcher transitions, block candidates. Libraries add Field() to those
// entries; the daemon's sampler (internal/logging) checks Has. The field is
// of zap's skip type: it is never encoded, so it does not show in the output.
//
// This package owns only the marker. It does not sample, and it imports
// nothing of the daemon, so any library may use it.
package logkeep

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// key names the marker; skip-typed fields are not encoded, so the key never
// reaches the output.
const key = "proxyd.logkeep"

// Field marks an entry as one that must never be sampled away.
func Field() zap.Field {
	return zap.Field{Key: key, Type: zapcore.SkipType}
}

// Has reports whether fields carry the marker.
func Has(fields []zapcore.Field) bool {
	for i := range fields {
		if fields[i].Type == zapcore.SkipType && fields[i].Key == key {
			return true
		}
	}
	return false
}
