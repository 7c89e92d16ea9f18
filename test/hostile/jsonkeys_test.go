package hostile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
)

// frame is one open JSON object or array while walking tokens.
type frame struct {
	object    bool
	keys      map[string]bool
	expectKey bool
}

// duplicateKeys returns the keys that appear more than once in one object
// of the JSON value b (at any depth), or an error if b is not one JSON
// object. encoding/json keeps the last duplicate silently, and so do jq,
// Python and most log shippers: a duplicate "level" hides a warning.
func duplicateKeys(b []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var stack []*frame
	var dups []string
	first := true
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return dups, err
		}
		if !first && len(stack) == 0 {
			return dups, errors.New("trailing data after the object")
		}
		if first {
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return nil, fmt.Errorf("not a JSON object: starts with %v", tok)
			}
			first = false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, expectKey: true})
			case '[':
				stack = append(stack, &frame{})
			default: // '}' or ']': the value that held it is complete
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].expectKey = true
				}
			}
			continue
		case string:
			if top != nil && top.object && top.expectKey {
				if top.keys[v] && !slices.Contains(dups, v) {
					dups = append(dups, v)
				}
				top.keys[v] = true
				top.expectKey = false
				continue
			}
		}
		// A scalar value.
		if top != nil && top.object {
			top.expectKey = true
		}
	}
	if first {
		return nil, errors.New("empty line")
	}
	if len(stack) > 0 {
		return dups, errors.New("the object is not closed")
	}
	return dups, nil
}

func TestDuplicateKeys(t *testing.T) {
	tests := []struct {
		in   string
		dups []string
		err  bool
	}{
		{`{"level":"warn","ts":"x","msg":"pool is unhealthy","level":0}`, []string{"level"}, false},
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, nil, false},
		{`{"a":{"b":1,"b":2}}`, []string{"b"}, false},
		{`{"a":[1,{"x":1,"x":1}],"y":"a","a":3}`, []string{"x", "a"}, false},
		{`{"k":"k","v":"k"}`, nil, false},
		{`{"s":[],"t":{},"s2":[[],[{}]]}`, nil, false},
		{`[1,2]`, nil, true},
		{`not json`, nil, true},
		{`{"a":1`, nil, true},
		{``, nil, true},
		{`{"a":1}{"b":2}`, nil, true},
	}
	for _, tc := range tests {
		dups, err := duplicateKeys([]byte(tc.in))
		if (err != nil) != tc.err || !slices.Equal(dups, tc.dups) {
			t.Errorf("duplicateKeys(%s) = %v, %v; want %v, error %v", tc.in, dups, err, tc.dups, tc.err)
		}
	}
}
