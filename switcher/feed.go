package switcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
)

// maxFeedBytes bounds a demand feed's answer.
const maxFeedBytes = 4 << 20

// FeedStatus is the demand feed's health.
type FeedStatus struct {
	Configured bool   `json:"configured"`
	URL        string `json:"url,omitempty"`
	// LastSuccess is when the feed last answered; its demand stays in
	// force while it fails.
	LastSuccess time.Time `json:"last_success,omitempty"`
	Contracts   int       `json:"contracts"`
	// Error is why the last poll failed, "" when it worked.
	Error string `json:"error,omitempty"`
}

func (s *Switcher) feedConfigured() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.DemandURL != ""
}

// FeedStatus reports the demand feed's health.
func (s *Switcher) FeedStatus() FeedStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := FeedStatus{Configured: s.cfg.DemandURL != "", URL: s.cfg.DemandURL}
	if s.feed != nil {
		fs.LastSuccess, fs.Contracts = s.feed.FetchedAt, len(s.feed.Contracts)
	}
	if s.feedErr != nil {
		fs.Error = s.feedErr.Error()
	}
	return fs
}

// runFeed polls the demand feed every demand_poll_interval until ctx ends.
func (s *Switcher) runFeed(ctx context.Context) {
	s.mu.Lock()
	interval := s.cfg.DemandPollInterval.D()
	s.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_ = s.pollFeed(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollFeed fetches the demand feed once. On success its contracts replace
// the feed's previous ones (durably); on failure the last known demand
// stays in force and the failure is reported (an outage is never read as
// "no demand").
func (s *Switcher) pollFeed(ctx context.Context) error {
	s.mu.Lock()
	url, tokenFile := s.cfg.DemandURL, s.cfg.DemandTokenFile
	s.mu.Unlock()
	if url == "" {
		return nil
	}
	cs, invalid, err := s.fetchFeed(ctx, url, tokenFile)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		if s.feedErr == nil || s.feedErr.Error() != err.Error() {
			kept := 0
			if s.feed != nil {
				kept = len(s.feed.Contracts)
			}
			s.event(Event{Reason: "demand_feed_failed", Message: fmt.Sprintf("demand feed poll failed, keeping the last known demand "+
				"(%d contract(s)): %v", kept, err)})
		}
		s.feedErr = err
		return err
	}
	if s.feedErr != nil {
		s.event(Event{Reason: "demand_feed_recovered", Message: fmt.Sprintf("demand feed answers again: %d contract(s)", len(cs))})
	}
	s.feedErr = nil
	changed := s.feed == nil || !sameContracts(s.feed.Contracts, cs)
	s.feed = &feedSnapshot{FetchedAt: s.clock.Now(), Contracts: cs, Invalid: invalid}
	if len(s.feed.Invalid) == 0 {
		s.feed.Invalid = nil
	}
	if changed {
		s.event(Event{Reason: "demand_feed_changed", Message: fmt.Sprintf("demand feed: %d contract(s)", len(cs))})
		s.persistLocked()
		s.wakeLocked()
	}
	return nil
}

func sameContracts(a, b []Contract) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.GPUs != y.GPUs || !x.Start.Equal(y.Start) || !x.End.Equal(y.End) ||
			x.PriceUSDPerGPUHour != y.PriceUSDPerGPUHour || x.Priority != y.Priority || x.Workload != y.Workload ||
			x.LeadTime != y.LeadTime || strings.Join(x.Pin, ",") != strings.Join(y.Pin, ",") {
			return false
		}
	}
	return true
}

func (s *Switcher) fetchFeed(ctx context.Context, url, tokenFile string) ([]Contract, map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("demand feed %s: %w", url, err)
	}
	if tokenFile != "" {
		tok, err := readFeedToken(tokenFile)
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.feedClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("demand feed %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFeedBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("demand feed %s: reading the answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("demand feed %s answered %s: %s", url, resp.Status, quote(strings.TrimSpace(string(body))))
	}
	if len(body) > maxFeedBytes {
		return nil, nil, fmt.Errorf("demand feed %s answered more than %d bytes", url, maxFeedBytes)
	}
	cs, invalid, err := parseContractList(body)
	if err != nil {
		return nil, nil, fmt.Errorf("demand feed %s: %w", url, err)
	}
	for id, why := range invalid {
		s.log.Warn("demand feed entry is invalid and refused", zap.String("contract", id), zap.String("why", why))
	}
	return cs, invalid, nil
}

// readFeedToken reads the feed's bearer token; a file every user can read
// is refused, as for the API's own token.
func readFeedToken(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("switcher.demand_token_file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("switcher.demand_token_file: %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("switcher.demand_token_file: %s has mode %04o and is readable or writable by every user; chmod 0600 it",
			path, st.Mode().Perm())
	}
	if st.Size() > 4096 {
		return "", fmt.Errorf("switcher.demand_token_file: %s is %d bytes; a token file holds one line", path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("switcher.demand_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("switcher.demand_token_file: " + path + " is empty")
	}
	return tok, nil
}
