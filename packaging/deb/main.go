package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the "deb" packager
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "deb:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	binary, version, arch, out, repo string
	mtime                            time.Time
}

func run(args []string) error {
	fs := flag.NewFlagSet("deb", flag.ContinueOnError)
	var o options
	var epoch int64
	fs.StringVar(&o.binary, "binary", "", "the built proxyd binary to package (make build: bin/proxyd)")
	fs.StringVar(&o.version, "version", "", "package version; a git describe string such as v0.3.0-12-gabc1234 is turned into a Debian one")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "Debian architecture of the binary (amd64, arm64)")
	fs.StringVar(&o.out, "out", "dist", "directory for proxyd_<version>_<arch>.deb")
	fs.StringVar(&o.repo, "repo", "../..", "the proxyd repository root (for the unit, configs and docs)")
	fs.Int64Var(&epoch, "mtime", 0, "Unix time stamped on every file (0: SOURCE_DATE_EPOCH, else now); fixed for reproducible builds")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.binary == "" || o.version == "" {
		return errors.New("--binary and --version are required (make deb passes both)")
	}
	if epoch == 0 {
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			if _, err := fmt.Sscan(s, &epoch); err != nil {
				return fmt.Errorf("SOURCE_DATE_EPOCH %q is not a Unix time: %w", s, err)
			}
		}
	}
	o.mtime = time.Now().UTC()
	if epoch != 0 {
		o.mtime = time.Unix(epoch, 0).UTC()
	}
	path, err := build(o)
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

// debVersion turns a git describe string into a Debian version: "v1.2.3"
// is 1.2.3, "v1.2.3-4-gabc" is 1.2.3+git4.abc, a bare commit "abc1234" is
// 0.0.0+gitabc1234, and "-dirty" becomes "+dirty".
func debVersion(v string) (string, error) {
	v = strings.TrimPrefix(v, "v")
	dirty := strings.HasSuffix(v, "-dirty")
	v = strings.TrimSuffix(v, "-dirty")
	var out string
	if m := regexp.MustCompile(`^(\d+\.\d+\.\d+)(?:-(\d+)-g([0-9a-f]+))?$`).FindStringSubmatch(v); m != nil {
		out = m[1]
		if m[2] != "" {
			out += "+git" + m[2] + "." + m[3]
		}
	} else if regexp.MustCompile(`^[0-9a-f]{7,40}$`).MatchString(v) {
		out = "0.0.0+git" + v
	} else if regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(v) {
		out = v
	} else {
		return "", fmt.Errorf("version %q is neither a git describe string nor a Debian version", v)
	}
	if dirty {
		out += "+dirty"
	}
	return out, nil
}

// packagedConfig is the example config with the API token file the
// postinst creates switched on.
func packagedConfig(example []byte) ([]byte, error) {
	const from, to = `api_token_file = ""`, `api_token_file = "/etc/proxyd/api-token"`
	if bytes.Count(example, []byte(from)) != 1 {
		return nil, fmt.Errorf("configs/proxyd.toml: expected exactly one line %q to point at the packaged token file", from)
	}
	return bytes.Replace(example, []byte(from), []byte(to), 1), nil
}

func build(o options) (string, error) {
	version, err := debVersion(o.version)
	if err != nil {
		return "", err
	}
	repo := func(p string) string { return filepath.Join(o.repo, p) }
	example, err := os.ReadFile(repo("configs/proxyd.toml"))
	if err != nil {
		return "", fmt.Errorf("reading the example config: %w", err)
	}
	cfg, err := packagedConfig(example)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "proxyd-deb")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cfgPath := filepath.Join(tmp, "proxyd.toml")
	if err := os.WriteFile(cfgPath, cfg, 0o640); err != nil {
		return "", err
	}
	if _, err := os.Stat(o.binary); err != nil {
		return "", fmt.Errorf("the binary to package: %w (run make build first)", err)
	}
	fi := func(mode os.FileMode, group string) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: group, Mode: mode, MTime: o.mtime}
	}
	contents := files.Contents{
		{Source: o.binary, Destination: "/usr/bin/proxyd", FileInfo: fi(0o755, "root")},
		{Source: repo("systemd/proxyd.service"), Destination: "/usr/lib/systemd/system/proxyd.service", FileInfo: fi(0o644, "root")},
		{Source: repo("systemd/proxyd.sysusers"), Destination: "/usr/lib/sysusers.d/proxyd.conf", FileInfo: fi(0o644, "root")},
		{Source: repo("systemd/proxyd.tmpfiles"), Destination: "/usr/lib/tmpfiles.d/proxyd.conf", FileInfo: fi(0o644, "root")},
		// The group is fixed up to proxyd by the postinst, once the user exists.
		{Source: cfgPath, Destination: "/etc/proxyd/proxyd.toml", Type: files.TypeConfigNoReplace, FileInfo: fi(0o640, "root")},
		{Source: repo("configs/prometheus/proxyd.rules.yml"), Destination: "/usr/share/proxyd/prometheus/proxyd.rules.yml", FileInfo: fi(0o644, "root")},
		{Source: repo("configs/prometheus/prometheus.yml"), Destination: "/usr/share/proxyd/prometheus/prometheus.yml", FileInfo: fi(0o644, "root")},
		{Source: repo("configs/grafana/proxyd.json"), Destination: "/usr/share/proxyd/grafana/proxyd.json", FileInfo: fi(0o644, "root")},
		{Source: repo("configs/proxyd.toml"), Destination: "/usr/share/doc/proxyd/examples/proxyd.toml", FileInfo: fi(0o644, "root")},
		{Source: repo("README.md"), Destination: "/usr/share/doc/proxyd/README.md", FileInfo: fi(0o644, "root")},
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:        "proxyd",
		Arch:        o.arch,
		Platform:    "linux",
		Version:     version,
		Section:     "net",
		Priority:    "optional",
		Maintainer:  "Hashgate <ops@hashgate.io>",
		Description: "Stratum V1 farm proxy and GPU workload switcher for Bitcoin mining sites\n proxyd aggregates a farm's ASICs into few upstream pool sessions, validates every\n share locally and relays the pool's verdict; it lends GPUs between mining and AI\n inference workloads through NVML. Runs as a hardened systemd service.",
		Vendor:      "Hashgate",
		Homepage:    "https://github.com/hashgate/proxyd",
		License:     "Proprietary",
		MTime:       o.mtime,
		Overridables: nfpm.Overridables{
			Depends:    []string{"systemd (>= 247)", "adduser | systemd-sysusers"},
			Recommends: []string{"prometheus-node-exporter"},
			Contents:   contents,
			Scripts: nfpm.Scripts{
				PostInstall: repo("packaging/deb/scripts/postinst"),
				PreRemove:   repo("packaging/deb/scripts/prerm"),
				PostRemove:  repo("packaging/deb/scripts/postrm"),
			},
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("package description: %w", err)
	}
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(o.out, fmt.Sprintf("proxyd_%s_%s.deb", version, o.arch))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("building %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, nil
}
