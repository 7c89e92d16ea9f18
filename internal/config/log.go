package config

// Log configures zap.
type Log struct {
	// Level is one of debug, info, warn, error. It can change on SIGHUP.
	Level string `toml:"level"`
	// Format is "json" (default, for journald and log shippers) or "console".
	Format string `toml:"format"`
}

func defaultLog() Log { return Log{Level: "info", Format: "json"} }

func (l *Log) validate(v *validator) {
	v.oneOf("log.level", l.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", l.Format, "json", "console")
}
