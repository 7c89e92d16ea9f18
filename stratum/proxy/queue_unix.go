//go:build unix

package proxy

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// writeNow writes as much of lines to the socket as it takes without
// waiting: the socket is non-blocking (the Go runtime sets it so), and the
// callback never asks the runtime to wait for it to become writable. n is
// the bytes written; err is nil when the socket was full (n short), and a
// real error when the connection failed. RawConn.Write holds the fd's
// write lock, like any other write.
func writeNow(rc syscall.RawConn, lines [][]byte) (n int, err error) {
	cerr := rc.Write(func(fd uintptr) bool {
		for {
			if len(lines) == 1 {
				n, err = unix.Write(int(fd), lines[0])
			} else {
				n, err = unix.Writev(int(fd), lines)
			}
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if n < 0 {
			n = 0
		}
		if errors.Is(err, unix.EAGAIN) {
			err = nil
		}
		return true
	})
	if cerr != nil {
		return 0, cerr
	}
	return n, err
}
