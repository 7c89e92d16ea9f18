package daemon

// factories lists every component proxyd can run, in start order. This is the
// one place where components are wired into the daemon: a new component adds
// its Factory here and nothing else changes.
func factories() []Factory {
	return []Factory{}
}
