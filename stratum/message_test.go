package stratum_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hashgate/proxyd/stratum"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name   string
		line   string
		kind   stratum.Kind
		method stratum.Method
		name2  string // MethodName
		id     string // raw id as echoed
		params string
		result string
		err    string
	}{
		{name: "submit", line: `{"id": 4, "method": "mining.submit", "params": ["w", "j", "00", "00000000", "00000000"]}`,
			kind: stratum.KindRequest, method: stratum.MethodSubmit, name2: "mining.submit", id: "4",
			params: `["w", "j", "00", "00000000", "00000000"]`},
		{name: "notification", line: `{"id":null,"method":"mining.set_difficulty","params":[8192]}`,
			kind: stratum.KindNotification, method: stratum.MethodSetDifficulty, name2: "mining.set_difficulty", id: "null", params: "[8192]"},
		{name: "notification without id", line: `{"method":"mining.notify","params":[]}`,
			kind: stratum.KindNotification, method: stratum.MethodNotify, name2: "mining.notify", id: "null", params: "[]"},
		{name: "string id echoed raw", line: `{"id":"a\u0062c","method":"mining.ping","params":[]}`,
			kind: stratum.KindRequest, method: stratum.MethodPing, name2: "mining.ping", id: `"a\u0062c"`, params: "[]"},
		{name: "odd number id echoed raw", line: `{"id":1.50e3,"method":"mining.ping"}`,
			kind: stratum.KindRequest, method: stratum.MethodPing, name2: "mining.ping", id: `1.50e3`},
		{name: "negative zero id", line: `{"id":-0,"method":"mining.ping"}`,
			kind: stratum.KindRequest, method: stratum.MethodPing, name2: "mining.ping", id: `-0`},
		{name: "long string id", line: `{"id":"` + strings.Repeat("i", 100) + `","method":"mining.ping"}`,
			kind: stratum.KindRequest, method: stratum.MethodPing, name2: "mining.ping", id: `"` + strings.Repeat("i", 100) + `"`},
		{name: "unknown method parses", line: `{"id":9,"method":"mining.multi_version","params":[1]}`,
			kind: stratum.KindRequest, method: stratum.MethodUnknown, name2: "mining.multi_version", id: "9", params: "[1]"},
		{name: "escaped method name", line: `{"id":9,"method":"mining.\u0073ubmit","params":[]}`,
			kind: stratum.KindRequest, method: stratum.MethodSubmit, name2: "mining.submit", id: "9", params: "[]"},
		{name: "response", line: `{"id":2,"result":true,"error":null}`,
			kind: stratum.KindResponse, id: "2", result: "true"},
		{name: "response with null method", line: `{"id":2,"method":null,"result":[1],"error":null}`,
			kind: stratum.KindResponse, id: "2", result: "[1]"},
		{name: "jsonrpc 2 member ignored", line: `{"jsonrpc":"2.0","id":1,"result":"pong"}`,
			kind: stratum.KindResponse, id: "1", result: `"pong"`},
		{name: "whitespace", line: " \t{ \"id\" : 1 , \"method\" : \"mining.ping\" , \"params\" : [ ] } \r\n",
			kind: stratum.KindRequest, method: stratum.MethodPing, name2: "mining.ping", id: "1", params: "[ ]"},

		{name: "not an object", line: `["mining.ping"]`, err: "must be a JSON object"},
		{name: "empty", line: ``, err: "must be a JSON object"},
		{name: "truncated", line: `{"id":1,"method":"mining.ping"`, err: "invalid JSON"},
		{name: "trailing garbage", line: `{"id":1,"method":"mining.ping"}x`, err: "trailing data"},
		{name: "two objects", line: `{"id":1,"method":"a"}{"id":2,"method":"b"}`, err: "trailing data"},
		{name: "object id", line: `{"id":{},"method":"mining.ping"}`, err: "id must be"},
		{name: "bool id", line: `{"id":true,"method":"mining.ping"}`, err: "id must be"},
		{name: "method not a string", line: `{"id":1,"method":5}`, err: "method must be a string"},
		{name: "neither method nor result", line: `{"id":1}`, err: "neither a method"},
		{name: "bad escape", line: `{"id":1,"method":"a\x"}`, err: "invalid escape"},
		{name: "control char", line: "{\"id\":1,\"method\":\"a\x01\"}", err: "control character"},
		{name: "bad number", line: `{"id":01,"method":"a"}`, err: "invalid"},
		{name: "bad literal", line: `{"id":nul,"method":"a"}`, err: "invalid literal"},
		{name: "unquoted key", line: `{id:1}`, err: "key must be a string"},
		{name: "deep nesting", line: `{"id":1,"method":"a","params":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, err: "nesting"},
		{name: "huge id", line: `{"id":"` + strings.Repeat("i", 300) + `","method":"a"}`, err: "id longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m stratum.Message
			err := stratum.ParseMessage([]byte(tt.line), &m)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, stratum.ErrMalformed) {
					t.Fatalf("error %v, want one mentioning %q wrapping ErrMalformed", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind != tt.kind || m.Method != tt.method || string(m.MethodName) != tt.name2 ||
				m.ID.String() != tt.id || string(m.Params) != tt.params || string(m.Result) != tt.result {
				t.Fatalf("got kind %v method %v %q id %s params %q result %q", m.Kind, m.Method, m.MethodName, m.ID, m.Params, m.Result)
			}
			if !json.Valid([]byte(tt.line)) {
				t.Fatal("accepted a line encoding/json rejects")
			}
		})
	}
}

func TestMethodNames(t *testing.T) {
	for m := stratum.MethodConfigure; m <= stratum.MethodGetVersion; m++ {
		if got := stratum.LookupMethod([]byte(m.String())); got != m {
			t.Errorf("%v round-trips to %v", m, got)
		}
	}
	if stratum.MethodUnknown.String() != "unknown" || stratum.LookupMethod([]byte("mining.nope")) != stratum.MethodUnknown {
		t.Fatal("unknown method")
	}
}

func TestID(t *testing.T) {
	n := stratum.NumberID(42)
	if n.String() != "42" {
		t.Fatalf("NumberID: %s", n.String())
	}
	if v, ok := n.Uint64(); !ok || v != 42 {
		t.Fatalf("Uint64: %d %v", v, ok)
	}
	s := stratum.StringID(`a"b`)
	if s.String() != `"a\"b"` {
		t.Fatalf("StringID: %s", s.String())
	}
	if _, ok := s.Uint64(); ok {
		t.Fatal("string id has no number")
	}
	var null stratum.ID
	if !null.IsNull() || null.String() != "null" || string(null.Raw()) != "null" {
		t.Fatal("zero ID is not null")
	}
	a, _ := stratum.ParseID([]byte("42"))
	if a != n {
		t.Fatal("ids with the same text differ")
	}
	long, err := stratum.ParseID([]byte(`"` + strings.Repeat("x", 60) + `"`))
	if err != nil || string(long.Raw()) != `"`+strings.Repeat("x", 60)+`"` {
		t.Fatalf("long id: %v %s", err, long.Raw())
	}
	for _, bad := range []string{"[]", "{}", "true", `"unterminated`, "1 2", "01"} {
		if _, err := stratum.ParseID([]byte(bad)); err == nil {
			t.Errorf("ParseID(%s) accepted", bad)
		}
	}
}

// An ID outlives the line it was parsed from.
func TestIDOwnsItsBytes(t *testing.T) {
	line := []byte(`{"id":"abc","method":"mining.ping"}`)
	var m stratum.Message
	if err := stratum.ParseMessage(line, &m); err != nil {
		t.Fatal(err)
	}
	id := m.ID
	copy(line, strings.Repeat("z", len(line)))
	if id.String() != `"abc"` {
		t.Fatalf("id changed with the line: %s", id.String())
	}
}

func TestParseMessageNoAllocs(t *testing.T) {
	line := []byte(submitLine)
	var m stratum.Message
	var s stratum.Submit
	allocs := testing.AllocsPerRun(100, func() {
		if err := stratum.ParseMessage(line, &m); err != nil {
			t.Fatal(err)
		}
		if err := s.DecodeParams(m.Params); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("decoding a submit allocates %v times", allocs)
	}
}
