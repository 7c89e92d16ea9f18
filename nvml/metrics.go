package nvml

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// GPU metrics use dcgm-exporter's names and labels where DCGM has the
// field, so existing dashboards and alerts work unchanged; everything
// proxyd adds is proxyd_gpu_…. DCGM series are all gauges: a counter
// without "_total" would be renamed in the OpenMetrics exposition.
//
// A field a GPU does not support is left out, as dcgm-exporter does.

// dcgmLabels are dcgm-exporter's per-GPU labels.
var dcgmLabels = []string{"gpu", "UUID", "device", "modelName", "pci_bus_id"}

type gpuGauge struct {
	desc  *prometheus.Desc
	value func(g *GPU) (float64, bool)
}

func dcgm(name, help string, value func(g *GPU) (float64, bool)) gpuGauge {
	return gpuGauge{desc: prometheus.NewDesc(name, help, dcgmLabels, nil), value: value}
}

func u32(p *uint32) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return float64(*p), true
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

const mib = 1 << 20

// collector reads the Manager's published state at scrape time: a scrape
// never calls NVML.
type collector struct {
	manager func() *Manager
	gauges  []gpuGauge
	health  *prometheus.Desc
	xids    *prometheus.Desc
	sampled *prometheus.Desc
	procs   *prometheus.Desc
	evErrs  *prometheus.Desc
}

func newCollector(manager func() *Manager) *collector {
	tel := func(f func(t *Telemetry) (float64, bool)) func(g *GPU) (float64, bool) {
		return func(g *GPU) (float64, bool) {
			if g.Telemetry == nil {
				return 0, false
			}
			return f(g.Telemetry)
		}
	}
	return &collector{
		manager: manager,
		gauges: []gpuGauge{
			dcgm("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).",
				tel(func(t *Telemetry) (float64, bool) { return u32(t.UtilizationGPU) })),
			dcgm("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).",
				tel(func(t *Telemetry) (float64, bool) { return u32(t.UtilizationMemory) })),
			dcgm("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).",
				tel(func(t *Telemetry) (float64, bool) {
					if t.MemoryUsedBytes == nil {
						return 0, false
					}
					return float64(*t.MemoryUsedBytes / mib), true
				})),
			dcgm("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).",
				tel(func(t *Telemetry) (float64, bool) {
					if t.MemoryFreeBytes == nil {
						return 0, false
					}
					return float64(*t.MemoryFreeBytes / mib), true
				})),
			dcgm("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).",
				tel(func(t *Telemetry) (float64, bool) { return u32(t.TemperatureC) })),
			dcgm("DCGM_FI_DEV_SLOWDOWN_TEMP", "Slowdown temperature threshold (in C).",
				tel(func(t *Telemetry) (float64, bool) { return u32(t.SlowdownTemperatureC) })),
			dcgm("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).",
				tel(func(t *Telemetry) (float64, bool) {
					v, ok := u32(t.PowerDrawMW)
					return v / 1000, ok
				})),
			dcgm("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "Enforced power limit (in W).",
				tel(func(t *Telemetry) (float64, bool) {
					v, ok := u32(t.PowerLimitMW)
					return v / 1000, ok
				})),
			dcgm("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).",
				tel(func(t *Telemetry) (float64, bool) { return u32(t.SMClockMHz) })),
			dcgm("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).",
				tel(func(t *Telemetry) (float64, bool) { return u32(t.MemoryClockMHz) })),
			dcgm("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock throttle reasons (bit mask).",
				tel(func(t *Telemetry) (float64, bool) {
					if t.ThrottleReasons == nil {
						return 0, false
					}
					return float64(*t.ThrottleReasons), true
				})),
			dcgm("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors.",
				tel(func(t *Telemetry) (float64, bool) {
					if t.ECC == nil {
						return 0, false
					}
					return float64(t.ECC.Corrected), true
				})),
			dcgm("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.",
				tel(func(t *Telemetry) (float64, bool) {
					if t.ECC == nil {
						return 0, false
					}
					return float64(t.ECC.Uncorrected), true
				})),
			dcgm("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for correctable errors.",
				tel(func(t *Telemetry) (float64, bool) {
					if t.RowRemap == nil {
						return 0, false
					}
					return float64(t.RowRemap.Corrected), true
				})),
			dcgm("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for uncorrectable errors.",
				tel(func(t *Telemetry) (float64, bool) {
					if t.RowRemap == nil {
						return 0, false
					}
					return float64(t.RowRemap.Uncorrected), true
				})),
			dcgm("DCGM_FI_DEV_ROW_REMAP_PENDING", "Whether a row remap is pending (1) or not (0).",
				tel(func(t *Telemetry) (float64, bool) {
					if t.RowRemap == nil {
						return 0, false
					}
					return b2f(t.RowRemap.Pending), true
				})),
			dcgm("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed (1) or not (0).",
				tel(func(t *Telemetry) (float64, bool) {
					if t.RowRemap == nil {
						return 0, false
					}
					return b2f(t.RowRemap.Failure), true
				})),
			dcgm("DCGM_FI_DEV_RETIRED_PENDING", "Whether retired pages are pending a reset (1) or not (0).",
				tel(func(t *Telemetry) (float64, bool) {
					if t.RetiredPagesPending == nil {
						return 0, false
					}
					return b2f(*t.RetiredPagesPending), true
				})),
			dcgm("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered (0: none).",
				func(g *GPU) (float64, bool) { return float64(g.LastXID), true }),
		},
		health: prometheus.NewDesc("proxyd_gpu_health",
			"1 for the GPU's current health state (healthy, degraded, unhealthy), 0 for the others.",
			[]string{"uuid", "state"}, nil),
		xids: prometheus.NewDesc("proxyd_gpu_xid_errors_total",
			"XID events seen per GPU and XID since proxyd started.", []string{"uuid", "xid"}, nil),
		sampled: prometheus.NewDesc("proxyd_gpu_telemetry_timestamp_seconds",
			"Unix time of the GPU's latest telemetry sample.", []string{"uuid"}, nil),
		procs: prometheus.NewDesc("proxyd_gpu_processes",
			"Compute and graphics processes on the GPU.", []string{"uuid"}, nil),
		evErrs: prometheus.NewDesc("proxyd_gpu_event_wait_errors_total",
			"Failed waits on the NVML event set since proxyd started.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range c.gauges {
		ch <- g.desc
	}
	ch <- c.health
	ch <- c.xids
	ch <- c.sampled
	ch <- c.procs
	ch <- c.evErrs
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.manager()
	if m == nil {
		return
	}
	gpus, xids, evErrs := m.metricsSnapshot()
	for i := range gpus {
		g := &gpus[i]
		device := ""
		if g.Minor >= 0 {
			device = "nvidia" + strconv.Itoa(g.Minor)
		}
		labels := []string{strconv.Itoa(g.Index), g.UUID, device, g.Name, g.PCIBusID}
		for _, gg := range c.gauges {
			if v, ok := gg.value(g); ok {
				ch <- prometheus.MustNewConstMetric(gg.desc, prometheus.GaugeValue, v, labels...)
			}
		}
		for _, s := range States {
			ch <- prometheus.MustNewConstMetric(c.health, prometheus.GaugeValue, b2f(g.Health.State == s), g.UUID, string(s))
		}
		for xid, n := range xids[g.UUID] {
			ch <- prometheus.MustNewConstMetric(c.xids, prometheus.CounterValue, float64(n), g.UUID, strconv.FormatUint(xid, 10))
		}
		if t := g.Telemetry; t != nil {
			ch <- prometheus.MustNewConstMetric(c.sampled, prometheus.GaugeValue, float64(t.SampledAt.UnixNano())/1e9, g.UUID)
			if procs, known := t.Processes(); known {
				ch <- prometheus.MustNewConstMetric(c.procs, prometheus.GaugeValue, float64(len(procs)), g.UUID)
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(c.evErrs, prometheus.CounterValue, float64(evErrs))
}

// metricsSnapshot copies what the collector needs under one lock.
func (m *Manager) metricsSnapshot() (gpus []GPU, xids map[string]map[uint64]uint64, eventErrors uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gpus = make([]GPU, len(m.order))
	xids = make(map[string]map[uint64]uint64, len(m.order))
	for i, g := range m.order {
		gpus[i] = g.view()
		counts := make(map[uint64]uint64, len(g.xids))
		for x, n := range g.xids {
			counts[x] = n
		}
		xids[g.info.UUID] = counts
	}
	return gpus, xids, m.eventErrors
}
