package switcher

import "time"

// DemoWorkload is the AI workload of `proxyd demo`'s switcher config
// (internal/components.DemoSwitcher).
const DemoWorkload = "demo-llm"

// DemoContract is a contract for DemoWorkload starting at start and
// lasting d, at $2 per GPU-hour.
func DemoContract(id string, gpus int, start time.Time, d time.Duration) Contract {
	return Contract{ID: id, GPUs: gpus, Start: start, End: start.Add(d), PriceUSDPerGPUHour: 2, Priority: 10, Workload: DemoWorkload}
}
