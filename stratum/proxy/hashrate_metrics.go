package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	hashrateDesc = prometheus.NewDesc("proxyd_hashrate_hs",
		"Estimated hashrate of the miners on each listener's pool (H/s), from accepted share difficulty over the last 10 minutes or the time each worker has been connected.",
		[]string{"server", "pool"}, nil)
	siteHashrateDesc = prometheus.NewDesc("proxyd_site_hashrate_hs",
		"Estimated hashrate of every miner on this proxyd (H/s): the sum of proxyd_hashrate_hs.", nil, nil)
)

// hashrateCollector reads the per-pool hashrate estimates at scrape time, the
// same figures /api/v1/pools shows, so the common dashboard query needs no
// arithmetic and agrees with the API.
type hashrateCollector struct{ p *Proxy }

func (c hashrateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hashrateDesc
	ch <- siteHashrateDesc
}

func (c hashrateCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.p.clock.Now()
	var site float64
	for _, s := range c.p.servers {
		loads := s.poolLoad(now)
		for _, pl := range s.pools {
			h := loads[pl].hashrate
			site += h
			ch <- prometheus.MustNewConstMetric(hashrateDesc, prometheus.GaugeValue, h, s.cfg.Name, pl.cfg.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(siteHashrateDesc, prometheus.GaugeValue, site)
}
