package daemon

import (
	"testing"
)

// notingComponent is ready but has a note for the operator.
type notingComponent struct {
	*fakeComponent
	notes []string
}

func (n *notingComponent) ReadyNotes() []string { return n.notes }

// TestReadyzShowsNotesWithoutFailing: a ready component's notes (a pool in
// reject alert) show in /readyz, prefixed with the component, and leave it 200.
func TestReadyzShowsNotesWithoutFailing(t *testing.T) {
	var calls []string
	c := &notingComponent{fakeComponent: &fakeComponent{name: "stratum", log: &calls},
		notes: []string{"server farm: pool p0 reject alert: rejected or left unanswered 60% of its last 50 shares (max_reject_rate 50%)"}}
	h := start(t, c)
	code, m := h.get(t, "/readyz", "")
	if code != 200 || m["ready"] != true {
		t.Fatalf("readyz = %d %v, want 200 ready: a note does not make proxyd unready", code, m)
	}
	notes, _ := m["notes"].([]any)
	if len(notes) != 1 || notes[0] != "stratum: "+c.notes[0] {
		t.Fatalf("readyz notes = %v, want the component's note prefixed with its name", m["notes"])
	}
	c.notes = nil
	if _, m := h.get(t, "/readyz", ""); m["notes"] != nil {
		t.Errorf("notes %v after they cleared", m["notes"])
	}
}
