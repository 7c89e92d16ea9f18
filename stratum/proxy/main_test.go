package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when any goroutine outlives the tests: every
// goroutine the proxy starts has an owner that joins it at Stop (see
// doc.go), and every test stops what it started. goleak retries for a
// moment, so goroutines that are ending anyway are not reported.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
