// Package stratum reads and writes Stratum V1, the line-delimited JSON-RPC
// protocol between Bitcoin miners, proxies and pools, exactly as real
// firmware and pools speak it.
//
// The package covers both directions, because a proxy is a server to its
// miners and a client to its pools:
//
//   - [Reader] splits a connection into lines with a hard length cap;
//     [NewCompactReader] is one that gives its buffer back between lines.
//   - [ParseMessage] classifies one line as a request, notification or
//     response without allocating; unknown methods parse fine.
//   - One type per method ([Submit], [Notify], [Configure], ...) decodes the
//     method's params ([Submit.DecodeParams]) and encodes them
//     ([Submit.AppendParams]); [AppendRequest], [AppendNotification],
//     [AppendResult] and [AppendError] frame them as lines.
//
// Hex fields are checked for length and alphabet on decode and every
// malformed message yields an error wrapping [ErrMalformed], which a server
// answers with [CodeOther] while keeping the connection.
//
// Byte slices returned by the decoders alias the line they were parsed from
// unless a field's documentation says otherwise: copy them (string(b)) to
// keep them past the next read.
package stratum
