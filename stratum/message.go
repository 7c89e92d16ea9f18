package stratum

// Method identifies a Stratum method. MethodUnknown stands for any name this
// package has no type for; Message.MethodName still carries it.
type Method uint8

// The methods of Stratum V1 seen in the field.
const (
	MethodUnknown Method = iota
	// Miner to server.
	MethodConfigure           // mining.configure (BIP310)
	MethodSubscribe           // mining.subscribe
	MethodAuthorize           // mining.authorize
	MethodSubmit              // mining.submit
	MethodSuggestDifficulty   // mining.suggest_difficulty
	MethodSuggestTarget       // mining.suggest_target
	MethodExtranonceSubscribe // mining.extranonce.subscribe
	MethodPing                // mining.ping
	// Server to miner.
	MethodSetDifficulty  // mining.set_difficulty
	MethodNotify         // mining.notify
	MethodSetVersionMask // mining.set_version_mask
	MethodSetExtranonce  // mining.set_extranonce
	MethodReconnect      // client.reconnect
	MethodShowMessage    // client.show_message
	MethodGetVersion     // client.get_version
)

// String returns the method's wire name, or "unknown".
func (m Method) String() string {
	switch m {
	case MethodConfigure:
		return "mining.configure"
	case MethodSubscribe:
		return "mining.subscribe"
	case MethodAuthorize:
		return "mining.authorize"
	case MethodSubmit:
		return "mining.submit"
	case MethodSuggestDifficulty:
		return "mining.suggest_difficulty"
	case MethodSuggestTarget:
		return "mining.suggest_target"
	case MethodExtranonceSubscribe:
		return "mining.extranonce.subscribe"
	case MethodPing:
		return "mining.ping"
	case MethodSetDifficulty:
		return "mining.set_difficulty"
	case MethodNotify:
		return "mining.notify"
	case MethodSetVersionMask:
		return "mining.set_version_mask"
	case MethodSetExtranonce:
		return "mining.set_extranonce"
	case MethodReconnect:
		return "client.reconnect"
	case MethodShowMessage:
		return "client.show_message"
	case MethodGetVersion:
		return "client.get_version"
	}
	return "unknown"
}

// LookupMethod returns the Method for a wire name, MethodUnknown if none.
func LookupMethod(name []byte) Method {
	switch string(name) { // no allocation: the compiler compares in place
	case "mining.submit":
		return MethodSubmit
	case "mining.notify":
		return MethodNotify
	case "mining.set_difficulty":
		return MethodSetDifficulty
	case "mining.configure":
		return MethodConfigure
	case "mining.subscribe":
		return MethodSubscribe
	case "mining.authorize":
		return MethodAuthorize
	case "mining.suggest_difficulty":
		return MethodSuggestDifficulty
	case "mining.suggest_target":
		return MethodSuggestTarget
	case "mining.extranonce.subscribe":
		return MethodExtranonceSubscribe
	case "mining.ping":
		return MethodPing
	case "mining.set_version_mask":
		return MethodSetVersionMask
	case "mining.set_extranonce":
		return MethodSetExtranonce
	case "client.reconnect":
		return MethodReconnect
	case "client.show_message":
		return MethodShowMessage
	case "client.get_version":
		return MethodGetVersion
	}
	return MethodUnknown
}

// Kind tells requests, notifications and responses apart.
type Kind uint8

const (
	// KindRequest is a method call with a non-null id: it wants a response.
	KindRequest Kind = iota + 1
	// KindNotification is a method call with a null or absent id.
	KindNotification
	// KindResponse carries a result or an error for an earlier request.
	KindResponse
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	}
	return "invalid"
}

// Message is one parsed Stratum line. Byte-slice members alias the line.
type Message struct {
	Kind Kind
	ID   ID
	// Method is the recognised method; MethodUnknown for a name this
	// package does not know, or for a response.
	Method Method
	// MethodName is the method as sent (unescaped), nil for responses.
	MethodName []byte
	// Params is the raw JSON of "params"; nil when absent. Decode it with
	// the method's type, e.g. Submit.DecodeParams.
	Params []byte
	// Result and Error are the raw JSON of a response's members; nil when
	// absent. Use ParseError and the result parsers to read them.
	Result []byte
	Error  []byte
}

// ParseMessage parses one line (terminator optional) into m, overwriting it.
// It validates the whole line as JSON, requires an object with either a
// "method" (a request or notification) or a "result"/"error" (a response),
// and an id that is a number, string or null. Unknown members are ignored;
// unknown methods are not an error. A well-formed line costs no allocation.
// Errors wrap ErrMalformed.
func ParseMessage(line []byte, m *Message) error {
	*m = Message{}
	s := scanner{buf: line}
	if s.peek() != '{' {
		return malformed("a Stratum message must be a JSON object")
	}
	s.pos++
	var rawID, rawMethod []byte
	haveResponse := false
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			if s.peek() != '"' {
				return s.errorf("object key must be a string")
			}
			start := s.pos
			if _, err := s.str(); err != nil {
				return err
			}
			key := line[start+1 : s.pos-1]
			if s.peek() != ':' {
				return s.errorf("missing ':' after object key")
			}
			s.pos++
			v, err := s.value(1)
			if err != nil {
				return err
			}
			switch string(key) {
			case "id":
				rawID = v
			case "method":
				rawMethod = v
			case "params":
				m.Params = v
			case "result":
				m.Result = v
				haveResponse = true
			case "error":
				m.Error = v
				haveResponse = true
			}
			c := s.peek()
			s.pos++
			if c == '}' {
				break
			}
			if c != ',' {
				s.pos--
				return s.errorf("missing ',' or '}'")
			}
		}
	}
	if s.peek() != 0 {
		return s.errorf("trailing data after the JSON object")
	}
	id, err := ParseID(rawID)
	if err != nil {
		return err
	}
	m.ID = id
	if rawMethod != nil && !isNull(rawMethod) {
		if rawMethod[0] != '"' {
			return malformed("method must be a string")
		}
		name, err := unquote(rawMethod)
		if err != nil {
			return err
		}
		m.MethodName = name
		m.Method = LookupMethod(name)
		if m.ID.IsNull() {
			m.Kind = KindNotification
		} else {
			m.Kind = KindRequest
		}
		return nil
	}
	if !haveResponse {
		return malformed("message has neither a method nor a result or error")
	}
	m.Kind = KindResponse
	return nil
}
