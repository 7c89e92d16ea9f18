package switcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// maxEcho bounds how many bytes of a client's or the feed's input an error
// message quotes: enough to recognise the value, never the whole of a
// megabyte body.
const maxEcho = 64

// maxJSONDepth bounds the nesting of a contract or request object; a
// contract is flat (its deepest value is the pin list).
const maxJSONDepth = 16

// Classes of strict-decoding errors, for errors.Is on a FieldError.
var (
	errDuplicateKey = errors.New("duplicate JSON key")
	errUnknownField = errors.New("unknown field")
)

// clip returns at most maxEcho bytes of s, cut on a rune boundary and
// marked with "…" when cut.
func clip(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	n := maxEcho
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// quote is %q of clip(s): safe to put in an error message or a log line.
func quote(s string) string { return fmt.Sprintf("%q", clip(s)) }

// strictObject reads data as exactly one JSON object and returns its
// members' raw values by name. Names are matched exactly (encoding/json
// alone matches them case-insensitively and lets the last duplicate win,
// so {"gpus":1,"GPUS":7} would mean 7): a name that appears twice, at any
// depth, is an error naming it, and so is a top-level name not in known
// (known == nil accepts any name). Nesting deeper than maxJSONDepth and
// anything after the object are errors. Messages quote at most maxEcho
// bytes of the input.
func strictObject(data []byte, known []string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, badJSON(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("bad JSON: expected an object {...}, got %s", tokenKind(tok))
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badJSON(err)
		}
		key, _ := tok.(string) // inside an object the decoder yields only string keys here
		if _, dup := fields[key]; dup {
			return nil, &FieldError{Field: clip(key), Err: errDuplicateKey,
				Msg: "appears more than once in the object; each field may appear once"}
		}
		if known != nil && !containsString(known, key) {
			msg := "unknown field (known: " + strings.Join(known, ", ") + ")"
			for _, k := range known {
				if strings.EqualFold(k, key) {
					msg = fmt.Sprintf("unknown field: field names are case-sensitive, did you mean %q?", k)
					break
				}
			}
			return nil, &FieldError{Field: clip(key), Err: errUnknownField, Msg: msg}
		}
		start := dec.InputOffset()
		vtok, err := dec.Token()
		if err != nil {
			return nil, badJSON(err)
		}
		if err := skipValue(dec, vtok, 1); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return nil, &FieldError{Field: clip(key), Err: fe.Err, Msg: fe.Msg}
			}
			return nil, err
		}
		raw := bytes.TrimLeft(data[start:dec.InputOffset()], " \t\r\n:")
		fields[key] = json.RawMessage(raw)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, badJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("bad JSON: more than one JSON value")
	}
	return fields, nil
}

// skipValue reads the rest of the value that starts with tok, refusing
// duplicate names in nested objects and nesting beyond maxJSONDepth.
func skipValue(dec *json.Decoder, tok json.Token, depth int) error {
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: already read whole
	}
	if depth > maxJSONDepth {
		return fmt.Errorf("bad JSON: nested more than %d levels deep", maxJSONDepth)
	}
	var seen map[string]bool
	if d == '{' {
		seen = map[string]bool{}
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badJSON(err)
		}
		if seen != nil {
			key, _ := tok.(string)
			if seen[key] {
				return &FieldError{Err: errDuplicateKey, Msg: fmt.Sprintf("holds an object in which %s appears more than once", quote(key))}
			}
			seen[key] = true
			if tok, err = dec.Token(); err != nil {
				return badJSON(err)
			}
		}
		if err := skipValue(dec, tok, depth+1); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return badJSON(err)
	}
	return nil
}

func badJSON(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("bad JSON: the input ends early")
	}
	return fmt.Errorf("bad JSON: %w", err)
}

func tokenKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "'" + v.String() + "'"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
