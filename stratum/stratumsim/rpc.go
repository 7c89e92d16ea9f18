package stratumsim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Stratum error codes as pools send them in the first element of an error
// triple [code, "message", null]. The Pool uses exactly these.
const (
	CodeOther         = 20 // other/unknown, malformed request, bad version bits, bad extranonce2
	CodeJobNotFound   = 21 // unknown or stale job
	CodeDuplicate     = 22 // duplicate share
	CodeLowDifficulty = 23 // share above the target in force for its job
	CodeUnauthorized  = 24 // worker not authorized on this connection
	CodeNotSubscribed = 25 // submit before mining.subscribe
)

// RPCError is a Stratum error as carried in a response's "error" field.
type RPCError struct {
	Code    int
	Message string
}

// Error implements error.
func (e *RPCError) Error() string {
	return fmt.Sprintf("stratum error %d: %s", e.Code, e.Message)
}

// errLineTooLong is returned by lineReader.next for a line over its cap.
var errLineTooLong = errors.New("stratumsim: line exceeds the maximum length")

// inMessage is any incoming Stratum line: a request or notification when
// Method is set, otherwise a response.
type inMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

// isNull reports whether a raw JSON value is absent or the literal null.
func isNull(r json.RawMessage) bool {
	r = bytes.TrimSpace(r)
	return len(r) == 0 || string(r) == "null"
}

// parseRPCError decodes the error field of a response in any of the shapes
// seen in the field: [code, "msg", data], {"code":..,"message":..} or a bare
// string. It returns nil for an absent or null error.
func parseRPCError(r json.RawMessage) *RPCError {
	if isNull(r) {
		return nil
	}
	var arr []json.RawMessage
	if json.Unmarshal(r, &arr) == nil {
		e := &RPCError{}
		if len(arr) > 0 {
			var c float64
			if json.Unmarshal(arr[0], &c) == nil {
				e.Code = int(c)
			}
		}
		if len(arr) > 1 {
			_ = json.Unmarshal(arr[1], &e.Message)
		}
		return e
	}
	var obj struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(r, &obj) == nil {
		return &RPCError{Code: obj.Code, Message: obj.Message}
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		return &RPCError{Message: s}
	}
	return &RPCError{Code: -1, Message: string(r)}
}

// parseID returns the numeric value of a JSON-RPC id (a number or a string
// holding one).
func parseID(r json.RawMessage) (uint64, bool) {
	r = bytes.TrimSpace(r)
	if len(r) == 0 {
		return 0, false
	}
	if r[0] == '"' {
		var s string
		if json.Unmarshal(r, &s) != nil {
			return 0, false
		}
		v, err := strconv.ParseUint(s, 10, 64)
		return v, err == nil
	}
	v, err := strconv.ParseUint(string(r), 10, 64)
	if err == nil {
		return v, true
	}
	f, err := strconv.ParseFloat(string(r), 64)
	if err != nil || f < 0 || f != float64(uint64(f)) {
		return 0, false
	}
	return uint64(f), true
}

// requestLine encodes a request {"id":id,"method":m,"params":p} plus '\n'.
func requestLine(id uint64, method string, params any) []byte {
	b, err := json.Marshal(struct {
		ID     uint64 `json:"id"`
		Method string `json:"method"`
		Params any    `json:"params"`
	}{id, method, params})
	if err != nil {
		// Params are built by this package from strings, numbers and
		// nested slices; they always marshal.
		panic(fmt.Sprintf("stratumsim: marshal %s: %v", method, err))
	}
	return append(b, '\n')
}

// notificationLine encodes {"id":null,"method":m,"params":p} plus '\n'.
func notificationLine(method string, params any) []byte {
	b, err := json.Marshal(struct {
		ID     *int   `json:"id"`
		Method string `json:"method"`
		Params any    `json:"params"`
	}{nil, method, params})
	if err != nil {
		panic(fmt.Sprintf("stratumsim: marshal %s: %v", method, err))
	}
	return append(b, '\n')
}

// responseLine encodes a response echoing id (raw JSON, null when empty),
// with result on success or the error triple when e is non-nil.
func responseLine(id json.RawMessage, result any, e *RPCError) []byte {
	if isNull(id) {
		id = json.RawMessage("null")
	}
	var errField any
	if e != nil {
		errField = []any{e.Code, e.Message, nil}
		result = nil
	}
	b, err := json.Marshal(struct {
		ID     json.RawMessage `json:"id"`
		Result any             `json:"result"`
		Error  any             `json:"error"`
	}{id, result, errField})
	if err != nil {
		panic(fmt.Sprintf("stratumsim: marshal response: %v", err))
	}
	return append(b, '\n')
}

// lineReader splits a stream into '\n'-terminated lines (a trailing '\r' is
// dropped) and refuses lines longer than max bytes. It is owned by the one
// goroutine that reads the connection.
type lineReader struct {
	r   *bufio.Reader
	max int
	buf []byte // accumulates lines longer than r's buffer
}

// next returns the next line without its terminator. The slice is valid
// until the following call. A line over max bytes yields errLineTooLong.
func (lr *lineReader) next() ([]byte, error) {
	line, err := lr.r.ReadSlice('\n')
	if err == nil {
		if len(line) > lr.max+1 {
			return nil, errLineTooLong
		}
		return trimEOL(line), nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	if cap(lr.buf) > 64<<10 {
		lr.buf = nil
	}
	lr.buf = append(lr.buf[:0], line...)
	for {
		if len(lr.buf) > lr.max {
			return nil, errLineTooLong
		}
		line, err = lr.r.ReadSlice('\n')
		lr.buf = append(lr.buf, line...)
		if err == nil {
			if len(lr.buf) > lr.max+1 {
				return nil, errLineTooLong
			}
			return trimEOL(lr.buf), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}
