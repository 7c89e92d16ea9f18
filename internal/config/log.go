package config

// Log configures zap and the events journal.
type Log struct {
	// Level is one of debug, info, warn, error. It can change on SIGHUP.
	Level string `toml:"level"`
	// Format is "json" (default, for journald and log shippers) or "console".
	Format string `toml:"format"`
	// EventsFileMiB bounds the durable events journal (GET /api/v1/events)
	// in switcher.state_dir, both of its files together; 0 keeps the
	// journal in memory only. Without the switcher the journal is always in
	// memory (proxyd then has no state directory).
	EventsFileMiB int `toml:"events_file_mib"`
}

// MaxEventsFileMiB bounds log.events_file_mib: the journal is read back
// into memory on start.
const MaxEventsFileMiB = 256

func defaultLog() Log { return Log{Level: "info", Format: "json", EventsFileMiB: 4} }

func (l *Log) validate(v *validator) {
	v.oneOf("log.level", l.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", l.Format, "json", "console")
	v.intRange("log.events_file_mib", int64(l.EventsFileMiB), 0, MaxEventsFileMiB)
}
