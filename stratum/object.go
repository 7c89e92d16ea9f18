package stratum

import (
	"encoding/json"
)

// Member is one member of a JSON object: a key and its raw JSON value.
type Member struct {
	Key   string
	Value json.RawMessage
}

// Object is a JSON object kept in member order, as mining.configure's
// params and result are: the order a miner sent is the order it is answered.
type Object []Member

// Get returns the value of key, if present.
func (o Object) Get(key string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.Key == key {
			return m.Value, true
		}
	}
	return nil, false
}

// Set replaces key's value, or appends the member when key is new. value
// must be valid JSON.
func (o *Object) Set(key string, value json.RawMessage) {
	for i := range *o {
		if (*o)[i].Key == key {
			(*o)[i].Value = value
			return
		}
	}
	*o = append(*o, Member{Key: key, Value: value})
}

// AppendJSON appends the object as JSON.
func (o Object) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	for i, m := range o {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, m.Key)
		dst = append(dst, ':')
		if len(m.Value) == 0 {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, m.Value...)
		}
	}
	return append(dst, '}')
}

// maxObjectMembers bounds the objects this package decodes (mining.configure
// sends a handful), keeping hostile input from costing quadratic time.
const maxObjectMembers = 64

// parseObject decodes a raw JSON object into an Object that owns its bytes.
// Duplicate keys keep the last value, as encoding/json does.
func parseObject(what string, raw []byte) (Object, error) {
	s := scanner{buf: raw}
	if s.peek() != '{' {
		return nil, malformed("%s must be a JSON object", what)
	}
	s.pos++
	var o Object
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			if s.peek() != '"' {
				return nil, s.errorf("object key must be a string")
			}
			start := s.pos
			if _, err := s.str(); err != nil {
				return nil, err
			}
			key, err := unquote(raw[start:s.pos])
			if err != nil {
				return nil, err
			}
			if s.peek() != ':' {
				return nil, s.errorf("missing ':' after object key")
			}
			s.pos++
			v, err := s.value(1)
			if err != nil {
				return nil, err
			}
			o.Set(string(key), append(json.RawMessage(nil), v...))
			if len(o) > maxObjectMembers {
				return nil, malformed("%s has more than %d members", what, maxObjectMembers)
			}
			switch s.peek() {
			case ',':
				s.pos++
				continue
			case '}':
				s.pos++
			default:
				return nil, s.errorf("missing ',' or '}'")
			}
			break
		}
	}
	if s.peek() != 0 {
		return nil, s.errorf("trailing data after the JSON object")
	}
	return o, nil
}
