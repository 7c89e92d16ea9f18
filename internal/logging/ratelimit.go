package logging

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/hashgate/proxyd/internal/logkeep"
)

// Rate limiter defaults.
const (
	// DefaultRateLimitPerSecond is how many entries of one kind (logger,
	// message, reason) pass each second before the rest are counted instead.
	DefaultRateLimitPerSecond = 10
	// DefaultSummaryInterval is how often the daemon writes the "N similar
	// messages suppressed" lines.
	DefaultSummaryInterval = 10 * time.Second
	// DefaultMaxKeys bounds the kinds tracked at once; entries of further
	// kinds share one overflow kind, so client-chosen reason values cannot
	// grow the table.
	DefaultMaxKeys = 1024
	// DefaultMaxLabels bounds the message label values of
	// proxyd_log_suppressed_total; further messages are counted as "other".
	DefaultMaxLabels = 64
	// maxKeyText bounds how much of a message or reason a key and a label keep.
	maxKeyText = 128
)

// overflowKey stands for every kind past MaxKeys; otherLabel for every
// message past MaxLabels.
var overflowKey = rlKey{msg: "(other messages: too many kinds to track each)"}

const otherLabel = "other"

// RateLimitOptions configure NewRateLimiter.
type RateLimitOptions struct {
	// PerSecond is how many entries of one kind pass per second; 0 turns
	// rate limiting off (every entry passes).
	PerSecond int
	// MaxKeys bounds the kinds tracked (0: DefaultMaxKeys).
	MaxKeys int
	// MaxLabels bounds the metric's message labels (0: DefaultMaxLabels).
	MaxLabels int
	// Now is the clock (nil: time.Now); tests inject their own.
	Now func() time.Time
}

// RateLimiter drops repetitive log entries: per kind of entry (logger name,
// message and the value of a "reason" field, if any) the first PerSecond
// entries of each second pass and the rest are counted. Flush writes one
// "N similar messages suppressed" line per kind that lost entries, at the
// level of the entries it stands for, and proxyd_log_suppressed_total counts
// every dropped entry by message.
//
// Entries at Error level and above, and entries carrying logkeep.Field(),
// always pass: failover, switcher transitions and block candidates must
// reach the journal however noisy a hostile client makes the rest.
//
// The limiter owns no goroutine: its owner (the daemon) calls Flush on a
// ticker and once more on shutdown. One mutex, mu, owns the table.
type RateLimiter struct {
	now        func() time.Time
	out        zapcore.Core // the wrapped root core: summaries go straight to it
	suppressed *prometheus.CounterVec
	maxKeys    int
	maxLabels  int

	mu        sync.Mutex // guards the fields below
	perSecond int
	kinds     map[rlKey]*rlState
	labels    map[string]prometheus.Counter
}

type rlKey struct{ logger, msg, reason string }

type rlState struct {
	windowStart time.Time // start of the current one-second window
	passed      int       // entries passed in the current window
	suppressed  uint64    // entries dropped since the last Flush
	since       time.Time // first drop since the last Flush
	level       zapcore.Level
	counter     prometheus.Counter
}

// NewRateLimiter wraps core. Log through Core(); call Flush periodically.
func NewRateLimiter(core zapcore.Core, o RateLimitOptions) *RateLimiter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.MaxLabels <= 0 {
		o.MaxLabels = DefaultMaxLabels
	}
	return &RateLimiter{
		now: o.Now,
		out: core,
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyd_log_suppressed_total",
			Help: "Log entries dropped by the log rate limiter, by message (at most 64 messages; the rest as \"other\").",
		}, []string{"message"}),
		maxKeys:   o.MaxKeys,
		maxLabels: o.MaxLabels,
		perSecond: max(o.PerSecond, 0),
		kinds:     map[rlKey]*rlState{},
		labels:    map[string]prometheus.Counter{},
	}
}

// Core is the rate-limited core to build loggers on.
func (r *RateLimiter) Core() zapcore.Core { return &rlCore{inner: r.out, rl: r} }

// SetPerSecond changes the limit live (SIGHUP); 0 turns limiting off.
func (r *RateLimiter) SetPerSecond(n int) {
	r.mu.Lock()
	r.perSecond = max(n, 0)
	r.mu.Unlock()
}

// PerSecond is the current limit.
func (r *RateLimiter) PerSecond() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.perSecond
}

// Describe implements prometheus.Collector (proxyd_log_suppressed_total).
func (r *RateLimiter) Describe(ch chan<- *prometheus.Desc) { r.suppressed.Describe(ch) }

// Collect implements prometheus.Collector.
func (r *RateLimiter) Collect(ch chan<- prometheus.Metric) { r.suppressed.Collect(ch) }

// LimiterOf returns the rate limiter behind a logger built by New or on a
// RateLimiter's Core, and nil for any other logger.
func LimiterOf(log *zap.Logger) *RateLimiter {
	if c, ok := log.Core().(*rlCore); ok {
		return c.rl
	}
	return nil
}

// allow decides whether an entry of kind k passes, and counts it if not.
func (r *RateLimiter) allow(k rlKey, lvl zapcore.Level) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.perSecond == 0 {
		return true
	}
	st := r.kinds[k]
	if st == nil {
		if len(r.kinds) >= r.maxKeys {
			k = overflowKey
			st = r.kinds[k]
		}
		if st == nil {
			st = &rlState{windowStart: now}
			r.kinds[k] = st
		}
	}
	if d := now.Sub(st.windowStart); d >= time.Second || d < 0 {
		st.windowStart, st.passed = now, 0
	}
	if st.passed < r.perSecond {
		st.passed++
		return true
	}
	if st.suppressed == 0 {
		st.since, st.level = now, lvl
	}
	st.suppressed++
	st.level = max(st.level, lvl)
	if st.counter == nil {
		st.counter = r.labelLocked(k.msg)
	}
	st.counter.Inc()
	return false
}

// labelLocked returns the counter for a message, folding messages past
// maxLabels into "other". r.mu must be held.
func (r *RateLimiter) labelLocked(msg string) prometheus.Counter {
	if c, ok := r.labels[msg]; ok {
		return c
	}
	label := msg
	if len(r.labels) >= r.maxLabels {
		label = otherLabel
	}
	c := r.suppressed.WithLabelValues(label)
	if label == msg {
		r.labels[msg] = c
	}
	return c
}

type summary struct {
	k     rlKey
	n     uint64
	since time.Time
	level zapcore.Level
}

// Flush writes one "N similar messages suppressed" line for every kind
// that lost entries since the last Flush, and forgets kinds whose window
// has passed with nothing to report (so the table holds only active kinds).
// A nil limiter (LimiterOf a plain logger) has nothing to flush.
func (r *RateLimiter) Flush() {
	if r == nil {
		return
	}
	now := r.now()
	var out []summary
	r.mu.Lock()
	for k, st := range r.kinds {
		if st.suppressed > 0 {
			out = append(out, summary{k: k, n: st.suppressed, since: st.since, level: st.level})
			st.suppressed = 0
			continue
		}
		if now.Sub(st.windowStart) >= time.Second {
			delete(r.kinds, k)
		}
	}
	r.mu.Unlock()
	// Written outside the lock: a slow stderr must not stall every logger.
	for _, s := range out {
		fields := []zapcore.Field{
			zap.String("suppressed_msg", s.k.msg),
			zap.Uint64("count", s.n),
			zap.Duration("over", now.Sub(s.since)),
		}
		if s.k.reason != "" {
			fields = append(fields, zap.String("reason", s.k.reason))
		}
		_ = r.out.Write(zapcore.Entry{
			Level:      s.level,
			Time:       now,
			LoggerName: s.k.logger,
			Message:    fmt.Sprintf("%d similar messages suppressed: %s", s.n, s.k.msg),
		}, fields)
	}
}

// rlCore is the zapcore.Core loggers write through. With-fields are handed
// to the inner core; the limiter only remembers whether they carry the
// keep marker or a reason.
type rlCore struct {
	inner  zapcore.Core
	rl     *RateLimiter
	keep   bool
	reason string
}

func (c *rlCore) Enabled(l zapcore.Level) bool { return c.inner.Enabled(l) }

// Level reports the inner core's minimum level (zap's LevelOf uses it).
func (c *rlCore) Level() zapcore.Level { return zapcore.LevelOf(c.inner) }

func (c *rlCore) With(fields []zapcore.Field) zapcore.Core {
	reason := c.reason
	if r, ok := reasonOf(fields); ok {
		reason = r
	}
	return &rlCore{inner: c.inner.With(fields), rl: c.rl, keep: c.keep || logkeep.Has(fields), reason: reason}
}

func (c *rlCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *rlCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	if ent.Level < zapcore.ErrorLevel && !c.keep && !logkeep.Has(fields) {
		reason := c.reason
		if r, ok := reasonOf(fields); ok {
			reason = r
		}
		k := rlKey{logger: clip(ent.LoggerName), msg: clip(ent.Message), reason: clip(reason)}
		if !c.rl.allow(k, ent.Level) {
			return nil
		}
	}
	return c.inner.Write(ent, fields)
}

func (c *rlCore) Sync() error { return c.inner.Sync() }

// reasonOf finds the value of a field named "reason" (the last one wins, as
// in the encoded line).
func reasonOf(fields []zapcore.Field) (string, bool) {
	for i := len(fields) - 1; i >= 0; i-- {
		f := fields[i]
		if f.Key != "reason" {
			continue
		}
		switch f.Type {
		case zapcore.StringType:
			return f.String, true
		case zapcore.Int64Type, zapcore.Int32Type, zapcore.Int16Type, zapcore.Int8Type:
			return strconv.FormatInt(f.Integer, 10), true
		case zapcore.Uint64Type, zapcore.Uint32Type, zapcore.Uint16Type, zapcore.Uint8Type:
			return strconv.FormatUint(uint64(f.Integer), 10), true
		}
		// Other types (a Stringer, an error) would need a call into
		// arbitrary code under the logger: such entries are grouped by
		// logger and message alone.
		return "", true
	}
	return "", false
}

// clip bounds a key's text and keeps it valid UTF-8 (a Prometheus label
// value must be).
func clip(s string) string {
	if len(s) > maxKeyText {
		cut := maxKeyText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return s
}
