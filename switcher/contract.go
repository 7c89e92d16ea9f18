package switcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
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

// Bounds of a contract's fields: gpus (config allows the same), the
// length of a workload name (as [switcher.workload.<name>]) and of a GPU
// UUID in pin (NVML's UUID buffer). They also bound what an error message
// can quote back.
const (
	maxContractGPUs = 4096
	maxWorkloadName = 63
	maxGPUUUID      = 96
)

// validateContract checks a contract's shape (not whether this node can
// serve it: that is a refusal).
func validateContract(c Contract) error {
	switch {
	case !contractID.MatchString(c.ID):
		return &FieldError{Field: "id", Msg: quote(c.ID) + " must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"}
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
	case len(c.Workload) > maxWorkloadName:
		return &FieldError{Field: "workload", Msg: fmt.Sprintf("%s is not a workload name (at most %d characters)", quote(c.Workload), maxWorkloadName)}
	case len(c.Pin) > maxContractGPUs:
		return &FieldError{Field: "pin", Msg: fmt.Sprintf("lists %d GPUs (at most %d)", len(c.Pin), maxContractGPUs)}
	case c.LeadTime < 0 || c.LeadTime.D() > 7*24*time.Hour:
		return &FieldError{Field: "lead_time", Msg: fmt.Sprintf("%s is out of range (allowed 0 to 168h)", c.LeadTime)}
	}
	seen := map[string]bool{}
	for _, p := range c.Pin {
		switch {
		case strings.TrimSpace(p) == "":
			return &FieldError{Field: "pin", Msg: "holds an empty GPU UUID"}
		case len(p) > maxGPUUUID:
			return &FieldError{Field: "pin", Msg: fmt.Sprintf("%s is not a GPU UUID (at most %d characters)", quote(p), maxGPUUUID)}
		case seen[p]:
			return &FieldError{Field: "pin", Msg: "lists GPU " + quote(p) + " twice"}
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
		return c, &FieldError{Field: "id", Msg: quote(*b.ID) + " differs from the id in the URL, " + quote(pathID)}
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
			return time.Time{}, &FieldError{Field: field, Msg: quote(*v) + " is not an RFC 3339 date-time such as 2026-12-01T00:00:00Z"}
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
			return c, &FieldError{Field: "lead_time", Msg: quote(*b.LeadTime) + " is not a duration such as \"10m\""}
		}
		c.LeadTime = Duration(d)
	}
	return c, validateContract(c)
}

// contractFields are the fields of a contract body, spelled exactly.
var contractFields = []string{"id", "gpus", "start", "end", "price_usd_per_gpu_hour", "priority", "workload", "pin", "lead_time"}

// decodeJSON decodes data, one JSON object, into v. Field names must be
// spelled exactly as in known and appear once (strictObject); a value of
// the wrong type is a FieldError naming the field. Messages quote at most
// maxEcho bytes of the input.
func decodeJSON(data []byte, v any, known []string) error {
	if _, err := strictObject(data, known); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // strictObject already refused them; kept as a second guard
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if i := strings.LastIndexByte(field, '.'); i >= 0 {
				field = field[i+1:]
			}
			return &FieldError{Field: clip(field), Msg: fmt.Sprintf("must be a JSON %s, got %s", jsonKind(te.Type.Kind().String()), clip(te.Value))}
		}
		return fmt.Errorf("bad JSON: %s", clip(err.Error()))
	}
	return nil
}

// decodeContract decodes a contract body (an API request or a feed entry);
// pathID, if not empty, is the id from the URL.
func decodeContract(data []byte, pathID string) (Contract, error) {
	var body contractBody
	if err := decodeJSON(data, &body, contractFields); err != nil {
		return Contract{ID: pathID}, err
	}
	return body.toContract(pathID)
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

// parseContractList decodes a feed: a JSON list of contracts, each held
// to the same strict rules as an API body. An entry that is not even an
// object with a well-formed id, or that repeats a key (its meaning is
// ambiguous), fails the whole poll (the feed is broken, and the last known
// demand stays); an entry that is invalid otherwise is kept, with why, so
// that its refusal shows.
func parseContractList(b []byte) (cs []Contract, invalid map[string]string, err error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("the feed must return a JSON list of contracts: %s", clip(err.Error()))
	}
	invalid = map[string]string{}
	for i, r := range raw {
		fields, err := strictObject(r, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("entry %d: %w", i, err)
		}
		var id string
		if err := json.Unmarshal(fields["id"], &id); err != nil || id == "" {
			return nil, nil, fmt.Errorf("entry %d is not a contract object with an id (a JSON string): %s", i, quote(string(r)))
		}
		if !contractID.MatchString(id) {
			return nil, nil, fmt.Errorf("entry %d: id %s must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit",
				i, quote(id))
		}
		c, err := decodeContract(r, "")
		c.ID = id
		if err != nil {
			invalid[id] = err.Error()
		}
		cs = append(cs, c)
	}
	return cs, invalid, nil
}
