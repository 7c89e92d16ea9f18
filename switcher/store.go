package switcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/switcher/workload"
)

// StateFile is the name of the switcher's state file in state_dir.
const StateFile = "switcher-state.json"

// stateFormat is the version of the file's layout; a newer one is refused.
const stateFormat = 1

// maxStateBytes bounds what is read back: the file is a few KiB per GPU.
const maxStateBytes = 64 << 20

// durable is the part of a GPU's record that survives a restart.
type durable struct {
	UUID    string    `json:"uuid"`
	Index   int       `json:"index"`
	State   State     `json:"state"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason"`
	Message string    `json:"message,omitempty"`
	// Contract is the contract the GPU serves or heads to (in DRAINING_AI:
	// the one it leaves).
	Contract string `json:"contract,omitempty"`
	Workload string `json:"workload,omitempty"`
	// Handle is proxyd's workload on the GPU, once started.
	Handle *workload.Handle `json:"handle,omitempty"`
	// Strays are other workloads of proxyd's found on the GPU after a
	// restart; they are killed before anything else happens on it.
	Strays []workload.Handle `json:"strays,omitempty"`
	// Escalated: the proof of free timed out once and what proxyd owns on
	// the GPU was killed; a second timeout quarantines.
	Escalated bool    `json:"escalated,omitempty"`
	Cordon    *Cordon `json:"cordon,omitempty"`
	// Power is the limit before the first profile, restored exactly.
	Power *nvml.PowerSnapshot `json:"power_snapshot,omitempty"`
	// IdleMemoryBytes is the lowest memory use seen with no process: the
	// baseline the proof of free compares against (0: not seen yet).
	IdleMemoryBytes uint64 `json:"idle_memory_bytes,omitempty"`
	// Backoff holds, per contract ("mining" for the miner), when a failed
	// workload may be tried on this GPU again.
	Backoff map[string]time.Time `json:"backoff,omitempty"`
}

// persisted is the state file.
type persisted struct {
	Format int `json:"format"`
	// Contracts are the API's contracts (the config's come from the file,
	// the feed's below).
	Contracts []Contract `json:"api_contracts"`
	// Feed is the last demand the feed returned: kept while it is down.
	Feed *feedSnapshot `json:"feed,omitempty"`
	GPUs []durable     `json:"gpus"`
}

type feedSnapshot struct {
	FetchedAt time.Time  `json:"fetched_at"`
	Contracts []Contract `json:"contracts"`
	// Invalid holds, by contract id, why an entry is not valid.
	Invalid map[string]string `json:"invalid,omitempty"`
}

// store writes the state file atomically: a temporary file in the same
// directory, fsync, rename over the old one, fsync of the directory. A
// kill -9 at any moment leaves either the old or the new file.
type store struct {
	dir  string
	path string
	last []byte // what the file holds now; equal content is not rewritten
}

func newStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("switcher state_dir %s: %w", dir, err)
	}
	return &store{dir: dir, path: filepath.Join(dir, StateFile)}, nil
}

// load reads the state file; nil (and no error) when there is none.
func (st *store) load() (*persisted, error) {
	b, err := os.ReadFile(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading switcher state %s: %w", st.path, err)
	}
	if len(b) > maxStateBytes {
		return nil, fmt.Errorf("switcher state %s is %d bytes: not a state file proxyd wrote", st.path, len(b))
	}
	var p persisted
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("switcher state %s is unreadable (%v); the switcher will not act on guesses: "+
			"move the file aside to start from what runs on the GPUs (contracts added through the API are then lost)", st.path, err)
	}
	if p.Format != stateFormat {
		return nil, fmt.Errorf("switcher state %s has format %d, this proxyd reads format %d: was it written by another version?",
			st.path, p.Format, stateFormat)
	}
	st.last = b
	return &p, nil
}

// save writes p unless the file already holds exactly that.
func (st *store) save(p *persisted) error {
	p.Format = stateFormat
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding switcher state: %w", err)
	}
	b = append(b, '\n')
	if bytes.Equal(b, st.last) {
		return nil
	}
	if err := writeAtomic(st.dir, st.path, b); err != nil {
		return err
	}
	st.last = b
	return nil
}

// tempPrefix and tempSuffix frame the name of a state write in progress:
// os.CreateTemp puts a decimal number between them.
const (
	tempPrefix = "." + StateFile + "."
	tempSuffix = ".tmp"
)

// isStateTemp reports whether name is one of the switcher's own temporary
// state files: exactly tempPrefix, 1 to 20 digits, tempSuffix.
func isStateTemp(name string) bool {
	mid, ok := strings.CutPrefix(name, tempPrefix)
	if !ok {
		return false
	}
	if mid, ok = strings.CutSuffix(mid, tempSuffix); !ok || len(mid) == 0 || len(mid) > 20 {
		return false
	}
	for _, c := range []byte(mid) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// removeStaleTemps removes the temporary files a write interrupted by a
// crash (kill -9, power loss) left in the directory. Only regular files
// named like the switcher's own (isStateTemp) are touched; nothing else
// in state_dir is. Call it before the first write: a temporary file is
// stale only when no write is under way.
func (st *store) removeStaleTemps() (removed []string, err error) {
	entries, err := os.ReadDir(st.dir)
	if err != nil {
		return nil, fmt.Errorf("listing switcher state_dir %s for stale temporary files: %w", st.dir, err)
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !isStateTemp(e.Name()) {
			continue
		}
		p := filepath.Join(st.dir, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing stale switcher temporary file: %w", err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

func writeAtomic(dir, path string, b []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*"+tempSuffix)
	if err != nil {
		return fmt.Errorf("writing switcher state in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing switcher state %s: %w", tmp, err)
	}
	if err = os.Chmod(tmp, 0o640); err != nil {
		return fmt.Errorf("writing switcher state %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing switcher state %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing switcher state directory %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("syncing switcher state directory %s: %w", dir, err)
	}
	return nil
}
