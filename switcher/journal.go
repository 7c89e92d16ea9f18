package switcher

import (
	"github.com/hashgate/proxyd/internal/events"
)

// journalComponent is the journal's component name for the switcher's events.
const journalComponent = "switcher"

// Journal event kinds.
const (
	// KindTransition: a GPU changed state (From, To, Reason).
	KindTransition = "transition"
	// KindDecision: anything else decided about a GPU, a contract or the
	// demand feed (a power limit, a cordon, a refusal, a failed poll).
	KindDecision = "decision"
)

// record turns an Event into a journal entry: subject is the GPU (or, for
// decisions about a contract, the contract), details carry the account
// and the contract. Callers hold mu.
func (s *Switcher) record(e Event) Event {
	je := events.Event{Time: e.At, Component: journalComponent, Kind: KindDecision, From: string(e.From), To: string(e.To),
		Reason: e.Reason, Details: map[string]any{"message": e.Message}}
	if e.GPU != "" && e.From != e.To && e.To != "" {
		je.Kind = KindTransition
	}
	switch {
	case e.GPU != "":
		je.Subject = e.GPU
		je.Details["gpu"] = e.GPU
	default:
		je.Subject = e.Contract
	}
	if e.Contract != "" {
		je.Details["contract"] = e.Contract
	}
	if len(e.Processes) > 0 {
		je.Details["processes"] = e.Processes
	}
	je = s.journal.Add(je)
	e.Seq, e.At = je.Seq, je.Time
	return e
}

// EventFilter selects the switcher's events.
type EventFilter struct {
	// After returns only events with a larger sequence number.
	After    uint64
	GPU      string
	Contract string
	// Limit caps the answer (the latest ones are kept); 0 means 500.
	Limit int
}

// Events returns the switcher's recorded decisions and transitions,
// oldest first, from the journal (bounded: the daemon keeps the latest
// events of every component).
func (s *Switcher) Events(f EventFilter) []Event {
	if f.Limit <= 0 {
		f.Limit = 500
	}
	out := []Event{}
	for _, je := range s.journal.List(events.Query{Component: journalComponent, Subject: f.GPU, After: f.After}) {
		e := Event{Seq: je.Seq, At: je.Time, From: State(je.From), To: State(je.To), Reason: je.Reason}
		e.Message, _ = je.Details["message"].(string)
		e.GPU, _ = je.Details["gpu"].(string)
		e.Contract, _ = je.Details["contract"].(string)
		e.Processes, _ = je.Details["processes"].([]ProcessOwner)
		if e.Contract == "" && e.GPU == "" {
			e.Contract = je.Subject
		}
		if f.Contract != "" && e.Contract != f.Contract {
			continue
		}
		out = append(out, e)
	}
	if len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}
