package nvml

import (
	"errors"
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// LibraryName is the shared library the NVIDIA driver installs and go-nvml
// loads.
const LibraryName = "libnvidia-ml.so.1"

// Errors callers test for with errors.Is.
var (
	// ErrLibraryNotFound: the NVIDIA driver's NVML library could not be
	// loaded (no driver installed on this machine).
	ErrLibraryNotFound = errors.New("NVIDIA library " + LibraryName + " not found: is the NVIDIA driver installed? " +
		"(check with: ldconfig -p | grep libnvidia-ml)")
	// ErrNotSupported: the GPU does not have the feature (GeForce boards
	// lack ECC and row remapping, for instance). Not a fault.
	ErrNotSupported = errors.New("not supported by this GPU")
	// ErrGPULost: the GPU stopped answering (fell off the bus); it stays
	// unhealthy until a reboot or reset and an explicit Resume.
	ErrGPULost = errors.New("GPU is lost (fell off the bus or stopped answering)")
	// ErrNoPermission: the call needs root (CAP_SYS_ADMIN).
	ErrNoPermission = errors.New("permission denied by the driver (this call needs root)")
	// ErrUnknownGPU: no GPU with that UUID on this node.
	ErrUnknownGPU = errors.New("no GPU with that UUID on this node")
	// ErrReadBackMismatch: NVML accepted a setting but reads back a
	// different value (another agent manages the GPU, or the driver
	// silently refused).
	ErrReadBackMismatch = errors.New("value read back differs from the value set")
	// ErrProbeFailed: Resume's probe found the GPU still not fit for work.
	ErrProbeFailed = errors.New("GPU probe failed")
	// ErrNotRunning: the Manager was not started or has stopped.
	ErrNotRunning = errors.New("GPU monitoring is not running")
)

// ReturnError is an NVML call that did not return SUCCESS. It matches
// ErrNotSupported, ErrGPULost and ErrNoPermission with errors.Is where its
// code means that, and unwraps to the gonvml.Return itself.
type ReturnError struct {
	Op  string // the NVML call, e.g. "GetPowerUsage"
	GPU string // "GPU 3 (GPU-…)" or "" for system calls
	Ret gonvml.Return
}

func (e *ReturnError) Error() string {
	where := ""
	if e.GPU != "" {
		where = e.GPU + ": "
	}
	msg := fmt.Sprintf("%sNVML %s: %s", where, e.Op, returnName(e.Ret))
	if hint := hint(e.Ret); hint != "" {
		msg += " (" + hint + ")"
	}
	return msg
}

// Unwrap returns the NVML return code.
func (e *ReturnError) Unwrap() error { return e.Ret }

// Is matches the package's sentinel errors.
func (e *ReturnError) Is(target error) bool {
	switch target {
	case ErrNotSupported:
		return e.Ret == gonvml.ERROR_NOT_SUPPORTED
	case ErrGPULost:
		return e.Ret == gonvml.ERROR_GPU_IS_LOST
	case ErrNoPermission:
		return e.Ret == gonvml.ERROR_NO_PERMISSION
	case ErrLibraryNotFound:
		return e.Ret == gonvml.ERROR_LIBRARY_NOT_FOUND
	}
	return false
}

// returnName prints a Return without consulting the loaded library (whose
// strings are longer but need the library).
func returnName(r gonvml.Return) string {
	return r.String()
}

// hint says what an operator can do about a return code.
func hint(r gonvml.Return) string {
	switch r {
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return LibraryName + " not found: install the NVIDIA driver"
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return "the nvidia kernel module is not loaded: check lsmod | grep nvidia and dmesg"
	case gonvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "the NVML library and the kernel module are from different driver versions: reboot after a driver upgrade"
	case gonvml.ERROR_NO_PERMISSION:
		return "needs root"
	case gonvml.ERROR_GPU_IS_LOST:
		return "the GPU fell off the bus: reboot or reset it"
	case gonvml.ERROR_RESET_REQUIRED:
		return "reset the GPU (nvidia-smi -r) or reboot"
	case gonvml.ERROR_INSUFFICIENT_POWER:
		return "check the GPU's power cables"
	}
	return ""
}

// retErr wraps a non-SUCCESS Return; nil for SUCCESS.
func retErr(op, gpu string, ret gonvml.Return) error {
	if ret == gonvml.SUCCESS {
		return nil
	}
	return &ReturnError{Op: op, GPU: gpu, Ret: ret}
}
