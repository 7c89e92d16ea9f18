package stratum

import (
	"encoding/json"
	"math"
	"strconv"
)

// Params is a method's params: every request and notification type of this
// package implements it with a pointer receiver (&Submit{...}).
type Params interface {
	Method() Method
	AppendParams(dst []byte) []byte
}

// AppendRequest appends the request line {"id":..,"method":..,"params":[..]}
// and its "\n" to dst.
func AppendRequest[P Params](dst []byte, id ID, p P) []byte {
	dst = append(dst, `{"id":`...)
	dst = id.AppendJSON(dst)
	return appendCall(dst, p)
}

// AppendNotification appends a notification line, which carries "id":null.
func AppendNotification[P Params](dst []byte, p P) []byte {
	return appendCall(append(dst, `{"id":null`...), p)
}

func appendCall[P Params](dst []byte, p P) []byte {
	dst = append(dst, `,"method":"`...)
	dst = append(dst, p.Method().String()...)
	dst = append(dst, `","params":`...)
	dst = p.AppendParams(dst)
	return append(dst, '}', '\n')
}

// AppendResult appends a success response {"id":..,"result":..,"error":null}
// with result as raw JSON (nil writes null).
func AppendResult(dst []byte, id ID, result []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = id.AppendJSON(dst)
	dst = append(dst, `,"result":`...)
	if len(result) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, result...)
	}
	return append(dst, `,"error":null}`+"\n"...)
}

// AppendBoolResult appends a response whose result is true or false, as
// mining.authorize and mining.submit are answered.
func AppendBoolResult(dst []byte, id ID, ok bool) []byte {
	if ok {
		return AppendResult(dst, id, []byte("true"))
	}
	return AppendResult(dst, id, []byte("false"))
}

// AppendError appends an error response
// {"id":..,"result":null,"error":[code,"message",null]}.
func AppendError(dst []byte, id ID, code int, message string) []byte {
	dst = append(dst, `{"id":`...)
	dst = id.AppendJSON(dst)
	dst = append(dst, `,"result":null,"error":[`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ',')
	dst = appendString(dst, message)
	return append(dst, ",null]}\n"...)
}

// ParseError reads a response's "error" member. It returns nil for an absent
// or null error. It accepts the Stratum triple [code, "message", data], the
// JSON-RPC 2.0 object {"code":..,"message":..} and a bare string (code
// CodeOther), all three of which pools send.
func ParseError(raw []byte) (*Error, error) {
	if len(raw) == 0 || isNull(raw) {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		msg, err := unquote(raw)
		if err != nil {
			return nil, err
		}
		return &Error{Code: CodeOther, Message: string(msg)}, nil
	case '[':
		var el [3][]byte
		n, err := elements("error", raw, el[:])
		if err != nil {
			return nil, err
		}
		if n < 1 {
			return nil, malformed("error: empty array")
		}
		return errorFrom(el[0], el[1], n >= 2)
	case '{':
		o, err := parseObject("error", raw)
		if err != nil {
			return nil, err
		}
		code, _ := o.Get("code")
		msg, ok := o.Get("message")
		return errorFrom(code, msg, ok)
	}
	return nil, malformed("error must be null, an array, an object or a string")
}

func errorFrom(code, msg []byte, haveMsg bool) (*Error, error) {
	e := &Error{Code: CodeOther}
	if len(code) > 0 && !isNull(code) {
		f, err := numberParam("error", "code", code)
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<31 {
			return nil, malformed("error: code %s is not an integer", code)
		}
		e.Code = int(f)
	}
	if haveMsg && !isNull(msg) {
		s, err := stringParam("error", "message", msg)
		if err != nil {
			return nil, err
		}
		e.Message = string(s)
	}
	return e, nil
}

// ParseBoolResult reads a true/false result (authorize, submit); null reads
// as false. Pools reject with a null result and an error: check both.
func ParseBoolResult(raw []byte) (bool, error) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false", "null", "":
		return false, nil
	}
	return false, malformed("result must be true, false or null, got %.40s", raw)
}

// ParseStringResult reads a string result (mining.ping's "pong",
// client.get_version's version).
func ParseStringResult(raw []byte) (string, error) {
	s, err := stringParam("result", "value", raw)
	return string(s), err
}

// SubscribeResult is the result of mining.subscribe:
// [[["mining.set_difficulty", id], ["mining.notify", id]], extranonce1, extranonce2_size].
type SubscribeResult struct {
	// Subscriptions are (method, subscription id) pairs; informational.
	Subscriptions [][2]string
	Extranonce1   []byte
	// Extranonce2Size is the number of extranonce2 bytes the subscriber rolls.
	Extranonce2Size int
}

// ParseSubscribeResult decodes a subscribe result. The subscriptions are
// read leniently (pools send a list of pairs, a single pair or null) since
// nothing depends on them; the extranonces are checked strictly.
func ParseSubscribeResult(raw []byte) (SubscribeResult, error) {
	const m = "mining.subscribe result"
	var el [3][]byte
	n, err := elements(m, raw, el[:])
	if err != nil {
		return SubscribeResult{}, err
	}
	if n != 3 {
		return SubscribeResult{}, malformed("%s: want 3 elements, got %d", m, n)
	}
	var r SubscribeResult
	r.Subscriptions = parseSubscriptions(el[0])
	if r.Extranonce1, err = hexBytesParam(m, "extranonce1", el[1], 0, MaxExtranonceSize); err != nil {
		return SubscribeResult{}, err
	}
	if r.Extranonce2Size, err = intParam(m, "extranonce2_size", el[2], 0, MaxExtranonceSize); err != nil {
		return SubscribeResult{}, err
	}
	return r, nil
}

func parseSubscriptions(raw []byte) [][2]string {
	pair := func(raw []byte) ([2]string, bool) {
		var el [2][]byte
		if n, err := elements("", raw, el[:]); err != nil || n != 2 {
			return [2]string{}, false
		}
		a, err1 := stringParam("", "", el[0])
		b, err2 := stringParam("", "", el[1])
		return [2]string{string(a), string(b)}, err1 == nil && err2 == nil
	}
	if p, ok := pair(raw); ok {
		return [][2]string{p}
	}
	var el [8][]byte
	n, err := elements("", raw, el[:])
	if err != nil {
		return nil
	}
	var subs [][2]string
	for _, e := range el[:n] {
		if p, ok := pair(e); ok {
			subs = append(subs, p)
		}
	}
	return subs
}

// AppendJSON appends the result as JSON.
func (r *SubscribeResult) AppendJSON(dst []byte) []byte {
	dst = append(dst, '[', '[')
	for i, s := range r.Subscriptions {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		dst = appendString(dst, s[0])
		dst = append(dst, ',')
		dst = appendString(dst, s[1])
		dst = append(dst, ']')
	}
	dst = append(dst, ']', ',', '"')
	dst = appendHex(dst, r.Extranonce1)
	dst = append(dst, '"', ',')
	dst = strconv.AppendInt(dst, int64(r.Extranonce2Size), 10)
	return append(dst, ']')
}

// ConfigureResult is the result of mining.configure: an object answering
// each requested extension. Answer every extension the miner requested and
// only those (Whatsminers disconnect on extra keys).
type ConfigureResult struct {
	Members Object
}

// ParseConfigureResult decodes a mining.configure result.
func ParseConfigureResult(raw []byte) (ConfigureResult, error) {
	o, err := parseObject("mining.configure result", raw)
	return ConfigureResult{Members: o}, err
}

// SetVersionRolling answers version-rolling: granted with mask, or refused.
func (r *ConfigureResult) SetVersionRolling(granted bool, mask uint32) {
	if !granted {
		r.Members.Set(ExtVersionRolling, json.RawMessage("false"))
		return
	}
	r.Members.Set(ExtVersionRolling, json.RawMessage("true"))
	var b []byte
	b = append(b, '"')
	b = appendHexUint32(b, mask)
	b = append(b, '"')
	r.Members.Set(ExtVersionRolling+".mask", b)
}

// Set answers any other extension (or sets any key) with a raw JSON value.
func (r *ConfigureResult) Set(key string, value json.RawMessage) { r.Members.Set(key, value) }

// VersionRolling reads the version-rolling answer: granted and the mask.
func (r *ConfigureResult) VersionRolling() (granted bool, mask uint32, err error) {
	v, ok := r.Members.Get(ExtVersionRolling)
	if !ok || string(v) != "true" {
		return false, 0, nil
	}
	raw, ok := r.Members.Get(ExtVersionRolling + ".mask")
	if !ok {
		return false, 0, malformed("mining.configure result: version-rolling granted without version-rolling.mask")
	}
	mask, err = hexUint32Param("mining.configure result", "version-rolling.mask", raw)
	return err == nil, mask, err
}

// AppendJSON appends the result object.
func (r *ConfigureResult) AppendJSON(dst []byte) []byte { return r.Members.AppendJSON(dst) }
