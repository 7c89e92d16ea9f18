// Package logging builds proxyd's zap logger from the [log] section: the
// encoder, the atomic level SIGHUP adjusts, and a rate limiter (ratelimit.go)
// that keeps a flood of one message from pushing the rest out of the journal.
//
// It does not own goroutines: whoever runs the process (the daemon) flushes
// the rate limiter's summaries on a ticker and at shutdown.
package logging

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/hashgate/proxyd/internal/config"
)

// New returns a logger writing to w (stderr in the daemon, which journald
// captures) and the atomic level that SIGHUP adjusts. The logger is rate
// limited at c.RateLimitPerSecond (0: not limited); LimiterOf finds the
// limiter, whose Flush its owner must call.
func New(c config.Log, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, zap.AtomicLevel{}, fmt.Errorf("log.level: %w", err)
	}
	atom := zap.NewAtomicLevelAt(lvl)
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	var encoder zapcore.Encoder
	switch c.Format {
	case "console":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	case "json", "":
		encoder = zapcore.NewJSONEncoder(enc)
	default:
		return nil, zap.AtomicLevel{}, fmt.Errorf("log.format %q: use json or console", c.Format)
	}
	if c.RateLimitPerSecond < 0 {
		return nil, zap.AtomicLevel{}, fmt.Errorf("log.rate_limit_per_second %d: use 0 (off) or more", c.RateLimitPerSecond)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), atom)
	rl := NewRateLimiter(core, RateLimitOptions{PerSecond: c.RateLimitPerSecond})
	return zap.New(rl.Core(), zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), atom, nil
}

// SetLevel applies a new level string to atom.
func SetLevel(atom zap.AtomicLevel, level string) error {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	atom.SetLevel(lvl)
	return nil
}
