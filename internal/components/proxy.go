package components

import (
	"fmt"
	"time"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/stratum/proxy"
)

// Proxy builds the Stratum proxy from the [[server]] and [[pool]] tables;
// nil when no [[server]] is configured.
func Proxy(env daemon.Env) (daemon.Component, error) {
	p, err := proxy.New(ProxyOptions(env))
	if p == nil || err != nil {
		return nil, err
	}
	return &proxyComponent{Proxy: p, cfg: env.Config}, nil
}

// ProxyOptions converts the daemon's config and services into the proxy's
// Options. The config has been validated and defaulted.
func ProxyOptions(env daemon.Env) proxy.Options {
	cfg := env.Config
	o := proxy.Options{Log: env.Log, Metrics: env.Metrics, Events: env.Events}
	if live := env.Liveness; live != nil {
		o.Liveness = func(name string, maxAge time.Duration) (beat, done func()) {
			b := live.Register(name, maxAge)
			return b.Beat, func() { live.Unregister(b) }
		}
	}
	for _, s := range cfg.Servers {
		o.Servers = append(o.Servers, proxy.ServerOptions{
			Name:                     s.Name,
			Listen:                   s.Listen,
			Extranonce2Size:          s.Extranonce2Size,
			InitialDifficulty:        s.InitialDifficulty,
			MinDifficulty:            s.MinDifficulty,
			MaxDifficulty:            s.MaxDifficulty,
			SharesPerMinute:          s.SharesPerMinute,
			MaxConnections:           s.MaxConnections,
			MaxConnectionsPerIP:      s.MaxConnectionsPerIP,
			MaxLineBytes:             s.MaxLineBytes,
			SubscribeTimeout:         s.SubscribeTimeout.D(),
			IdleTimeout:              s.IdleTimeout.D(),
			MaxProtocolErrors:        s.MaxProtocolErrors,
			NtimeWindow:              s.NtimeWindow.D(),
			Pools:                    s.Pools,
			FailbackDelay:            s.FailbackDelay.D(),
			NoPoolGrace:              s.NoPoolGrace.D(),
			RebalanceInterval:        s.RebalanceInterval.D(),
			MaxWorkersPerConnection:  s.MaxWorkersPerConnection,
			MaxRetiredWorkers:        s.MaxRetiredWorkers,
			MaxPendingAuthorizations: s.MaxPendingAuthorizations,
			MinMinerExtranonce2Size:  s.MinMinerExtranonce2Size,
		})
	}
	for _, p := range cfg.Pools {
		o.Pools = append(o.Pools, proxy.PoolOptions{
			Name:                       p.Name,
			URL:                        p.URL,
			User:                       p.User,
			Password:                   p.Password,
			SubmitTimeout:              p.SubmitTimeout.D(),
			MinersPerSession:           p.MinersPerSession.Limit(),
			Level:                      p.Level,
			Weight:                     p.Weight,
			Identity:                   p.Identity,
			WorkerTemplate:             p.WorkerTemplate,
			NoJobTimeout:               p.NoJobTimeout.D(),
			MaxRejectRate:              p.MaxRejectRate,
			CAFile:                     p.CAFile,
			TLSServerName:              p.TLSServerName,
			TLSPinSHA256:               p.TLSPinSHA256,
			MaxAuthorizationsPerSecond: p.MaxAuthorizationsPerSecond,
		})
	}
	return o
}

// proxyComponent is the proxy as a daemon component: it keeps the config it
// was built from to tell a reload what changed.
type proxyComponent struct {
	*proxy.Proxy
	cfg *config.Config
}

// Reload reports what a changed config would need: listeners and pools are
// bound to sessions and sockets, so every change here needs a restart.
func (c *proxyComponent) Reload(cfg *config.Config) ([]string, error) {
	return proxyRestartKeys(c.cfg, cfg), nil
}

// proxyRestartKeys names the [[server]] and [[pool]] entries that differ
// between the running config and a new one: "server" when the number of
// listeners changed, else "server[i]" per changed listener, then
// "pool.<name>" per pool a listener routes to that changed or went away.
func proxyRestartKeys(old, cfg *config.Config) []string {
	var need []string
	if len(cfg.Servers) != len(old.Servers) {
		need = append(need, "server")
	} else {
		for i, s := range old.Servers {
			if fmt.Sprint(cfg.Servers[i]) != fmt.Sprint(s) {
				need = append(need, fmt.Sprintf("server[%d]", i))
			}
		}
	}
	oldPools := map[string]config.Pool{}
	for _, pc := range old.Pools {
		oldPools[pc.Name] = pc
	}
	pools := map[string]config.Pool{}
	for _, pc := range cfg.Pools {
		pools[pc.Name] = pc
	}
	for _, s := range old.Servers {
		names := s.Pools
		if len(names) == 0 {
			for _, pc := range old.Pools {
				names = append(names, pc.Name)
			}
		}
		for _, n := range names {
			if nc, ok := pools[n]; !ok || fmt.Sprint(nc) != fmt.Sprint(oldPools[n]) {
				need = append(need, "pool."+n)
			}
		}
	}
	return need
}

// ProxyOf returns the Stratum proxy inside a component Proxy built, or nil
// when c is another component (the demo looks for the proxy's addresses).
func ProxyOf(c daemon.Component) *proxy.Proxy {
	if pc, ok := c.(*proxyComponent); ok {
		return pc.Proxy
	}
	return nil
}
