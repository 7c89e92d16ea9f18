package config

// Log configures zap and the events journal.
type Log struct {
	// Level is one of debug, info, warn, error. It can change on SIGHUP.
	Level string `toml:"level"`
	// Format is "json" (default, for journald and log shippers) or "console".
	Format string `toml:"format"`
	// RateLimitPerSecond is how many entries of one kind (logger, message,
	// reason) are written per second; the rest are counted and reported in a
	// "N similar messages suppressed" line every 10 s and in
	// proxyd_log_suppressed_total. Errors, failovers, switcher transitions
	// and block candidates are never dropped. 0 turns the limit off. It can
	// change on SIGHUP.
	RateLimitPerSecond int `toml:"rate_limit_per_second"`
	// EventsFileMiB bounds the durable events journal (GET /api/v1/events)
	// in switcher.state_dir, both of its files together; 0 keeps the
	// journal in memory only. Without the switcher the journal is always in
	// memory (proxyd then has no state directory).
	EventsFileMiB int `toml:"events_file_mib"`
}

// DefaultLogRateLimitPerSecond: a refused-connection storm then writes 10
// lines a second, far under journald's default burst (10,000 per 30 s).
const DefaultLogRateLimitPerSecond = 10

// MaxEventsFileMiB bounds log.events_file_mib: the journal is read back
// into memory on start.
const MaxEventsFileMiB = 256

func defaultLog() Log {
	return Log{Level: "info", Format: "json", RateLimitPerSecond: DefaultLogRateLimitPerSecond, EventsFileMiB: 4}
}

func (l *Log) validate(v *validator) {
	v.oneOf("log.level", l.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", l.Format, "json", "console")
	v.intRange("log.rate_limit_per_second", int64(l.RateLimitPerSecond), 0, 1_000_000)
	v.intRange("log.events_file_mib", int64(l.EventsFileMiB), 0, MaxEventsFileMiB)
}
