// Package statuspage serves proxyd's status page: one small embedded page at
// GET / on the local HTTP listener, for the operator's browser or phone.
//
// The page itself needs no token and carries no data. It loads what it shows
// from the same listener:
//   - without a token, only /metrics, which is unauthenticated anyway: site
//     hashrate, miners, pools up, upstream sessions and GPUs per state;
//   - with the API token the operator pastes once (kept in the browser's
//     localStorage for this origin, never sent anywhere but this listener's
//     /api/v1), everything: pools with health and level, listeners, workers
//     with paging and search, GPUs with state, owner and power, contracts and
//     the last events.
//
// So the page adds no new unauthenticated surface: what it shows without a
// token, /metrics already shows. It has no external assets (sites run
// offline), refreshes itself every 5 s and is laid out for a phone too. The
// package does not read proxyd's state itself and has no API of its own.
package statuspage
