//go:build !unix

package events

import "os"

// lockFile does nothing where flock is not available: one proxyd per
// state_dir is then the operator's promise.
func lockFile(*os.File) error { return nil }
