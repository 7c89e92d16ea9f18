package switcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/hashgate/proxyd/internal/config"
)

// FieldError is a problem with one field of a request or contract.
type FieldError struct {
	Field string
	Msg   string
	// Err, if set, is the class of problem (ErrBelowFloor).
	Err error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap returns the class of problem.
func (e *FieldError) Unwrap() error { return e.Err }

var contractID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// maxContractGPUs bounds gpus (config allows the same).
const maxContractGPUs = 4096

// validateContract checks a contract's shape (not whether this node can
// serve it: that is a refusal).
func validateContract(c Contract) error {
	switch {
	case !contractID.MatchString(c.ID):
		return &FieldError{Field: "id", Msg: fmt.Sprintf("%q must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit", c.ID)}
	case c.GPUs < 1 || c.GPUs > maxContractGPUs:
		return &FieldError{Field: "gpus", Msg: fmt.Sprintf("%d is out of range (allowed 1 to %d)", c.GPUs, maxContractGPUs)}
	case c.Start.IsZero():
		return &FieldError{Field: "start", Msg: "required: an RFC 3339 date-time such as 2026-12-01T00:00:00Z"}
	case c.End.IsZero() || !c.End.After(c.Start):
		return &FieldError{Field: "end", Msg: "required and must be after start"}
	case math.IsNaN(c.PriceUSDPerGPUHour) || c.PriceUSDPerGPUHour < 0 || c.PriceUSDPerGPUHour > 1e6:
		return &FieldError{Field: "price_usd_per_gpu_hour", Msg: fmt.Sprintf("%g is out of range (allowed 0 to 1e6)", c.PriceUSDPerGPUHour)}
	case c.Workload == "":
		return &FieldError{Field: "workload", Msg: "must name the workload to run"}
	case c.LeadTime < 0 || c.LeadTime.D() > 7*24*time.Hour:
		return &FieldError{Field: "lead_time", Msg: fmt.Sprintf("%s is out of range (allowed 0 to 168h)", c.LeadTime)}
	}
	seen := map[string]bool{}
	for _, p := range c.Pin {
		switch {
		case strings.TrimSpace(p) == "":
			return &FieldError{Field: "pin", Msg: "holds an empty GPU UUID"}
		case seen[p]:
			return &FieldError{Field: "pin", Msg: "lists GPU " + p + " twice"}
		}
		seen[p] = true
	}
	if len(c.Pin) > 0 && len(c.Pin) < c.GPUs {
		return &FieldError{Field: "pin", Msg: fmt.Sprintf("pins %d GPU(s) but the contract wants %d", len(c.Pin), c.GPUs)}
	}
	return nil
}

// contractBody is a contract as the API and the feed send it. Pointers
// tell a missing field from a zero one.
type contractBody struct {
	ID                 *string  `json:"id"`
	GPUs               *int     `json:"gpus"`
	Start              *string  `json:"start"`
	End                *string  `json:"end"`
	PriceUSDPerGPUHour *float64 `json:"price_usd_per_gpu_hour"`
	Priority           *int     `json:"priority"`
	Workload           *string  `json:"workload"`
	Pin                []string `json:"pin"`
	LeadTime           *string  `json:"lead_time"`
}

// toContract turns a body into a contract; pathID, if not empty, is the
// id from the URL (a body id must then match it).
func (b contractBody) toContract(pathID string) (Contract, error) {
	var c Contract
	switch {
	case b.ID != nil && pathID != "" && *b.ID != pathID:
		return c, &FieldError{Field: "id", Msg: fmt.Sprintf("%q differs from the id in the URL, %q", *b.ID, pathID)}
	case b.ID != nil:
		c.ID = *b.ID
	default:
		c.ID = pathID
	}
	if b.GPUs == nil {
		return c, &FieldError{Field: "gpus", Msg: "required: how many GPUs the contract wants"}
	}
	c.GPUs = *b.GPUs
	parse := func(field string, v *string) (time.Time, error) {
		if v == nil {
			return time.Time{}, &FieldError{Field: field, Msg: "required: an RFC 3339 date-time such as 2026-12-01T00:00:00Z"}
		}
		t, err := time.Parse(time.RFC3339, *v)
		if err != nil {
			return time.Time{}, &FieldError{Field: field, Msg: fmt.Sprintf("%q is not an RFC 3339 date-time such as 2026-12-01T00:00:00Z", *v)}
		}
		return t, nil
	}
	var err error
	if c.Start, err = parse("start", b.Start); err != nil {
		return c, err
	}
	if c.End, err = parse("end", b.End); err != nil {
		return c, err
	}
	if b.PriceUSDPerGPUHour == nil {
		return c, &FieldError{Field: "price_usd_per_gpu_hour", Msg: "required: the price in USD per GPU-hour"}
	}
	c.PriceUSDPerGPUHour = *b.PriceUSDPerGPUHour
	if b.Priority != nil {
		c.Priority = *b.Priority
	}
	if b.Workload == nil {
		return c, &FieldError{Field: "workload", Msg: "required: the name of the workload to run"}
	}
	c.Workload = *b.Workload
	c.Pin = b.Pin
	if b.LeadTime != nil && *b.LeadTime != "" {
		d, err := time.ParseDuration(*b.LeadTime)
		if err != nil {
			return c, &FieldError{Field: "lead_time", Msg: fmt.Sprintf("%q is not a duration such as \"10m\"", *b.LeadTime)}
		}
		c.LeadTime = config.Duration(d)
	}
	return c, validateContract(c)
}

// contractFields are the fields of a contract body.
const contractFields = "id, gpus, start, end, price_usd_per_gpu_hour, priority, workload, pin, lead_time"

// decodeJSON decodes one JSON value, refusing unknown fields, and names the
// offending field in its error where it can; known lists the fields for
// that message.
func decodeJSON(r io.Reader, v any, known string) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if i := strings.LastIndexByte(field, '.'); i >= 0 {
				field = field[i+1:]
			}
			return &FieldError{Field: field, Msg: fmt.Sprintf("must be a JSON %s, got %s", jsonKind(te.Type.Kind().String()), te.Value)}
		}
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			f = strings.Trim(f, `"`)
			return &FieldError{Field: f, Msg: "unknown field (known: " + known + ")"}
		}
		return fmt.Errorf("bad JSON: %w", err)
	}
	if dec.More() {
		return errors.New("bad JSON: more than one JSON value")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "float64", "uint32":
		return "number"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	}
	return goKind
}

// parseContractList decodes a feed: a JSON list of contracts. An entry
// that is not even an object with an id fails the whole poll (the feed is
// broken); an entry that is invalid otherwise is kept, with why, so that
// its refusal shows.
func parseContractList(b []byte) (cs []Contract, invalid map[string]string, err error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("the feed must return a JSON list of contracts: %w", err)
	}
	invalid = map[string]string{}
	for i, r := range raw {
		var id struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(r, &id); err != nil || id.ID == "" {
			return nil, nil, fmt.Errorf("entry %d is not a contract object with an id: %s", i, truncate(string(r), 200))
		}
		var body contractBody
		c := Contract{ID: id.ID}
		err := decodeJSON(bytes.NewReader(r), &body, contractFields)
		if err == nil {
			c, err = body.toContract("")
			c.ID = id.ID
		}
		if err != nil {
			invalid[id.ID] = err.Error()
		}
		cs = append(cs, c)
	}
	return cs, invalid, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
