package switcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/hashgate/proxyd/internal/redact"
)

// maxFeedBytes bounds a demand feed's answer.
const maxFeedBytes = 4 << 20

// maxInvalidLogged bounds the log lines about invalid feed entries per
// changed answer; the API shows every one.
const maxInvalidLogged = 10

// FeedStatus is the demand feed's health.
type FeedStatus struct {
	Configured bool `json:"configured"`
	// URL is demand_url with its credentials redacted.
	URL string `json:"url,omitempty"`
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
	fs := FeedStatus{Configured: s.cfg.DemandURL != "", URL: redact.URL(s.cfg.DemandURL)}
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
	interval := s.cfg.DemandPollInterval
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
	rawURL, tokenFile := s.cfg.DemandURL, s.cfg.DemandTokenFile
	s.mu.Unlock()
	if rawURL == "" {
		return nil
	}
	cs, invalid, err := s.fetchFeed(ctx, rawURL, tokenFile)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	var ignored int
	if err == nil {
		cs, ignored, err = s.limitFeedLocked(cs, invalid, now)
	}
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
	s.feed = &feedSnapshot{FetchedAt: now, Contracts: cs, Invalid: invalid}
	if len(s.feed.Invalid) == 0 {
		s.feed.Invalid = nil
	}
	if changed {
		msg := fmt.Sprintf("demand feed: %d contract(s)", len(cs))
		if ignored > 0 {
			msg += fmt.Sprintf(" (%d more that ended are ignored: past contract_retention %s, or beyond max_contracts %d)",
				ignored, s.cfg.ContractRetention, s.cfg.MaxContracts)
		}
		s.event(Event{Reason: "demand_feed_changed", Message: msg})
		s.logInvalidLocked(invalid)
		s.persistLocked()
		s.wakeLocked()
	}
	return nil
}

// limitFeedLocked applies contract_retention and max_contracts to a feed
// answer: contracts that ended long ago, and the ended ones past
// max_contracts (oldest end first), are ignored; more than max_contracts
// live ones is an error, and the whole answer is refused. Callers hold mu.
func (s *Switcher) limitFeedLocked(cs []Contract, invalid map[string]string, now time.Time) ([]Contract, int, error) {
	keep, dropped, live := limitContracts(cs, now, s.cfg.ContractRetention, s.cfg.MaxContracts)
	if live > s.cfg.MaxContracts {
		return nil, 0, fmt.Errorf("the demand feed lists %d contracts that have not ended, more than [switcher] max_contracts (%d): "+
			"the whole answer is refused; raise max_contracts or have the feed send less", live, s.cfg.MaxContracts)
	}
	if len(dropped) > 0 {
		held := make(map[string]bool, len(keep))
		for _, c := range keep {
			held[c.ID] = true
		}
		for _, d := range dropped {
			if !held[d.ID] {
				delete(invalid, d.ID)
			}
		}
	}
	if keep == nil {
		keep = []Contract{}
	}
	return keep, len(dropped), nil
}

// logInvalidLocked logs the feed's invalid entries, a few by name (the API
// lists them all with why). Callers hold mu.
func (s *Switcher) logInvalidLocked(invalid map[string]string) {
	ids := make([]string, 0, len(invalid))
	for id := range invalid {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for i, id := range ids {
		if i == maxInvalidLogged {
			s.log.Warn("more demand feed entries are invalid and refused; GET /api/v1/contracts lists them with why",
				zap.Int("more", len(ids)-i))
			return
		}
		s.log.Warn("demand feed entry is invalid and refused", zap.String("contract", id), zap.String("why", invalid[id]))
	}
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

// fetchFeed polls the feed once. Its errors show the URL redacted (an
// http.Client error quotes the whole URL, credentials included), never the
// URL's password or query values even where the feed echoes them back,
// and at most a short prefix of what the feed answered.
func (s *Switcher) fetchFeed(ctx context.Context, rawURL, tokenFile string) ([]Contract, map[string]string, error) {
	secrets := urlSecrets(rawURL)
	cs, invalid, err := s.fetchFeedOnce(ctx, rawURL, tokenFile, secrets)
	if err != nil {
		return nil, nil, &redactedError{msg: scrub(redact.String(err.Error()), secrets), err: err}
	}
	for id, why := range invalid {
		invalid[id] = scrub(why, secrets)
	}
	return cs, invalid, nil
}

func (s *Switcher) fetchFeedOnce(ctx context.Context, rawURL, tokenFile string, secrets []string) ([]Contract, map[string]string, error) {
	shown := redact.URL(rawURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("demand feed %s: %w", shown, hideURL(err))
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
		return nil, nil, fmt.Errorf("demand feed %s: %w", shown, hideURL(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFeedBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("demand feed %s: reading the answer: %w", shown, hideURL(err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("demand feed %s answered %s: %s", shown, clip(resp.Status), quote(scrub(strings.TrimSpace(string(body)), secrets)))
	}
	if len(body) > maxFeedBytes {
		return nil, nil, fmt.Errorf("demand feed %s answered more than %d bytes", shown, maxFeedBytes)
	}
	cs, invalid, err := parseContractList(body)
	if err != nil {
		return nil, nil, fmt.Errorf("demand feed %s: %w", shown, err)
	}
	return cs, invalid, nil
}

// hideURL redacts the URL a *url.Error quotes, in place: fmt.Errorf
// renders the text of what it wraps at once, so this comes first.
func hideURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redact.URL(ue.URL)
	}
	return err
}

// redactedError is an error whose text has its secrets redacted; the
// chain stays for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// minSecretLen: shorter values are not scrubbed from free text (a one-letter
// query value would blank every such letter of a message); redact.URL
// still hides them wherever the URL itself is shown.
const minSecretLen = 4

// urlSecrets returns the values of rawURL that must not show anywhere: its
// user information and query values, as written and decoded. It reads them
// by hand, not with url.Parse, so that a URL too broken to parse does not
// escape.
func urlSecrets(rawURL string) []string {
	var out []string
	add := func(v string) {
		for _, x := range []string{v, unescape(v)} {
			if len(x) >= minSecretLen {
				out = append(out, x)
			}
		}
	}
	rest, query, _ := strings.Cut(rawURL, "?")
	query, _, _ = strings.Cut(query, "#")
	if _, after, ok := strings.Cut(rest, "://"); ok {
		authority, _, _ := strings.Cut(after, "/")
		if at := strings.LastIndexByte(authority, '@'); at >= 0 {
			info := authority[:at]
			add(info) // user:password
			if _, pw, ok := strings.Cut(info, ":"); ok {
				add(pw)
			}
		}
	}
	for _, part := range strings.Split(query, "&") {
		if _, v, ok := strings.Cut(part, "="); ok {
			add(v)
		}
	}
	// Longest first, so that a secret containing another goes whole.
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescape(v string) string {
	if d, err := url.QueryUnescape(v); err == nil {
		return d
	}
	return v
}

// scrub replaces every secret in s with redact.Placeholder.
func scrub(s string, secrets []string) string {
	for _, v := range secrets {
		s = strings.ReplaceAll(s, v, redact.Placeholder)
	}
	return s
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
