package demo

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher"
)

// Summary is one snapshot of the demo site, printed every few seconds and
// served under "summary" by GET /api/v1/demo. Counters are cumulative since
// the site started; HashrateHs covers the last minute (since the start
// during the first minute).
type Summary struct {
	// ElapsedS is the time since the site started, in seconds.
	ElapsedS float64 `json:"elapsed_s"`
	// Simulated names the parts of the site that are simulated ("pool",
	// "miners", "gpus"); everything else is proxyd's real code.
	Simulated []string `json:"simulated"`
	// Miners is the size of the simulated fleet; MinersConnected is how
	// many connections the proxy holds (its own count, not the fleet's).
	Miners          int `json:"miners"`
	MinersConnected int `json:"miners_connected"`
	// HashrateHs is the proxy's accepted share difficulty over the last
	// minute × 2^32 / seconds (rate of proxyd_share_difficulty_sum).
	HashrateHs float64 `json:"hashrate_hs"`
	// SharesOK are shares the proxy found valid; SharesRejected those it
	// rejected itself, by reason in RejectedBy.
	SharesOK       uint64            `json:"shares_ok"`
	SharesRejected uint64            `json:"shares_rejected"`
	RejectedBy     map[string]uint64 `json:"rejected_by_reason"`
	// Forwarded valid shares met the pool's difficulty and went upstream;
	// PoolAccepted and PoolRejected are the pool's verdicts on them.
	Forwarded    uint64 `json:"forwarded"`
	PoolAccepted uint64 `json:"pool_accepted"`
	PoolRejected uint64 `json:"pool_rejected"`
	// UpstreamSessions are active pool sessions; UpstreamConnecting those
	// still connecting.
	UpstreamSessions   int        `json:"upstream_sessions"`
	UpstreamConnecting int        `json:"upstream_connecting"`
	GPUs               GPUSummary `json:"gpus"`
}

// GPUSummary is the GPU part of a Summary.
type GPUSummary struct {
	// Backend is the nvml backend ("simulated" in the demo); empty when no
	// GPU component runs.
	Backend string `json:"backend,omitempty"`
	// Total is the number of GPUs in the inventory; Model the name they
	// share ("mixed" when they differ).
	Total int    `json:"total"`
	Model string `json:"model,omitempty"`
	// Health counts GPUs by nvml health state (healthy, degraded,
	// unhealthy).
	Health map[string]int `json:"health,omitempty"`
	// States counts GPUs by workload state once a switcher reports them
	// (e.g. "mining", "inference", "idle"); empty until then.
	States map[string]int `json:"states,omitempty"`
	// Unavailable says why there is no GPU view; empty when there is one.
	Unavailable string `json:"unavailable,omitempty"`
}

// summarizeGPUs is the one place where the demo summarises GPU states from
// the daemon's components. It reads the nvml component's inventory and
// health today; when the switcher lands, add a case for its component here
// that fills GPUSummary.States (the summary line and JSON already print
// them).
func summarizeGPUs(comps []daemon.Component) GPUSummary {
	var s GPUSummary
	found := false
	for _, c := range comps {
		// The wiring wraps the libraries' components: match what they promote.
		switch c := c.(type) {
		case interface{ Summary() switcher.Summary }:
			sum := c.Summary()
			if len(sum.States) > 0 {
				s.States = map[string]int{}
				for st, n := range sum.States {
					s.States[string(st)] = n
				}
			}
		case interface{ Manager() *nvml.Manager }:
			found = true
			m := c.Manager()
			if m == nil {
				s.Unavailable = "GPU backend not running (see /readyz)"
				continue
			}
			n := m.Node()
			s.Backend = n.Backend
			s.Total = len(n.GPUs)
			s.Health = map[string]int{}
			for i, g := range n.GPUs {
				s.Health[string(g.Health.State)]++
				switch {
				case i == 0:
					s.Model = g.Name
				case g.Name != s.Model:
					s.Model = "mixed"
				}
			}
		}
	}
	if !found {
		s.Unavailable = "no GPU component"
	}
	return s
}

// String is the one-line text form printed by `proxyd demo`, e.g.
//
//	[demo 0:35] SIMULATED pool, 300 miners, 8 GPUs | miners 300/300 | hashrate 1.29 MH/s | shares ok 1,234 rej 12 (low_difficulty 8, stale 4) | to pool 310: accepted 310, rejected 0 | upstream sessions 2 | GPUs 8 simulated: 8 healthy
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[demo %s] SIMULATED %s", clock(time.Duration(s.ElapsedS*float64(time.Second))), s.simulatedParts())
	fmt.Fprintf(&b, " | miners %s/%s", commas(uint64(s.MinersConnected)), commas(uint64(s.Miners)))
	fmt.Fprintf(&b, " | hashrate %s", Hashrate(s.HashrateHs))
	fmt.Fprintf(&b, " | shares ok %s rej %s", commas(s.SharesOK), commas(s.SharesRejected))
	if r := reasons(s.RejectedBy); r != "" {
		fmt.Fprintf(&b, " (%s)", r)
	}
	fmt.Fprintf(&b, " | to pool %s: accepted %s, rejected %s", commas(s.Forwarded), commas(s.PoolAccepted), commas(s.PoolRejected))
	fmt.Fprintf(&b, " | upstream sessions %d", s.UpstreamSessions)
	if s.UpstreamConnecting > 0 {
		fmt.Fprintf(&b, " (+%d connecting)", s.UpstreamConnecting)
	}
	fmt.Fprintf(&b, " | %s", s.GPUs)
	return b.String()
}

// simulatedParts spells out what is simulated: "pool, 300 miners, 8 GPUs".
func (s Summary) simulatedParts() string {
	parts := make([]string, 0, len(s.Simulated))
	for _, p := range s.Simulated {
		switch p {
		case "miners":
			parts = append(parts, commas(uint64(s.Miners))+" miners")
		case "gpus":
			parts = append(parts, strconv.Itoa(s.GPUs.Total)+" GPUs")
		default:
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ", ")
}

// String is the GPU part of the summary line: "GPUs 8 simulated: 8
// healthy", then the switcher's states when there are any.
func (g GPUSummary) String() string {
	if g.Unavailable != "" {
		return "GPUs: " + g.Unavailable
	}
	s := fmt.Sprintf("GPUs %d %s", g.Total, g.Backend)
	var health []string
	for _, st := range nvml.States { // severity order, not alphabetical
		if n := g.Health[string(st)]; n > 0 {
			health = append(health, fmt.Sprintf("%d %s", n, st))
		}
	}
	if len(health) > 0 {
		s += ": " + strings.Join(health, ", ")
	}
	if st := counts(g.States); st != "" {
		s += "; " + st
	}
	return s
}

// reasons renders rejection counts, largest first: "low_difficulty 8, stale 4".
func reasons(m map[string]uint64) string {
	type kv struct {
		k string
		v uint64
	}
	var list []kv
	for k, v := range m {
		if v > 0 {
			list = append(list, kv{k, v})
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].v != list[j].v {
			return list[i].v > list[j].v
		}
		return list[i].k < list[j].k
	})
	parts := make([]string, len(list))
	for i, e := range list {
		parts[i] = e.k + " " + commas(e.v)
	}
	return strings.Join(parts, ", ")
}

// counts renders state counts by name: "3 idle, 5 mining".
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

// clock renders an elapsed time as m:ss, or h:mm:ss from an hour on.
func clock(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// commas renders n with thousands separators: 1234567 → "1,234,567".
func commas(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	lead := len(s) % 3
	if lead > 0 {
		b.WriteString(s[:lead])
	}
	for i := lead; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// Hashrate renders hashes per second with an SI unit and three significant
// digits: 1290000 → "1.29 MH/s".
func Hashrate(hs float64) string {
	if !(hs > 0) || math.IsInf(hs, 0) {
		return "0 H/s"
	}
	units := []string{"H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"}
	i := 0
	for hs >= 999.5 && i < len(units)-1 {
		hs /= 1000
		i++
	}
	switch {
	case hs >= 99.95:
		return fmt.Sprintf("%.0f %s", hs, units[i])
	case hs >= 9.995:
		return fmt.Sprintf("%.1f %s", hs, units[i])
	default:
		return fmt.Sprintf("%.2f %s", hs, units[i])
	}
}
