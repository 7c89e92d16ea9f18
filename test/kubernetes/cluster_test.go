package kubernetes

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

const (
	adminToken  = "admin-token-0123456789abcdef"
	proxydToken = "proxyd-token-0123456789abcdef"
	// proxydUser is the service account of deploy/kubernetes/rbac.yaml:
	// RBAC binds a ServiceAccount subject by this user name, so a static
	// token for it gets exactly the shipped ClusterRole's permissions.
	proxydUser = "system:serviceaccount:proxyd:proxyd"
	apiToken   = "api-token-0123456789abcdef"
	node       = "node-1"
	driver     = "gpu.nvidia.com"
)

// repoRoot is the main module's root, two levels up.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// kubeAPIServer finds the kube-apiserver binary: $KUBE_APISERVER, then
// PATH, then GOBIN (where `make kube-apiserver` puts it). Missing, the
// test skips locally and fails in CI.
func kubeAPIServer(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KUBE_APISERVER"); p != "" {
		return p
	}
	if p, err := exec.LookPath("kube-apiserver"); err == nil {
		return p
	}
	gobin := os.Getenv("GOBIN")
	if gobin == "" {
		// One line each, GOBIN first (an empty line when unset).
		out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
		if lines := strings.Split(string(out), "\n"); err == nil && len(lines) >= 2 {
			gobin = strings.TrimSpace(lines[0])
			if gobin == "" {
				gobin = filepath.Join(strings.Split(strings.TrimSpace(lines[1]), string(os.PathListSeparator))[0], "bin")
			}
		}
	}
	p := filepath.Join(gobin, "kube-apiserver")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	msg := "kube-apiserver not found ($KUBE_APISERVER, PATH, " + p + "): build it with `make kube-apiserver` (.ci/run does)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a real etcd in this process on loopback.
func startEtcd(t *testing.T) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready in 60 s")
	}
	return client.String()
}

// apiServer is a kube-apiserver process the test started (and may kill
// and start again with the same flags and etcd).
type apiServer struct {
	t    *testing.T
	bin  string
	args []string
	url  string
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

func startAPIServer(t *testing.T, etcd string) *apiServer {
	t.Helper()
	bin := kubeAPIServer(t)
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.key")
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(fmt.Sprintf("%s,admin,admin-uid,system:masters\n%s,%s,proxyd-uid,system:serviceaccounts\n",
		adminToken, proxydToken, proxydUser)))
	port := freePort(t)
	a := &apiServer{t: t, bin: bin, dir: dir, url: fmt.Sprintf("https://127.0.0.1:%d", port), args: []string{
		"--etcd-servers=" + etcd,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--authorization-mode=RBAC",
		"--token-auth-file=" + tokens,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--allow-privileged=true", // what GPU clusters run with; the DaemonSet needs it
	}}
	a.start()
	t.Cleanup(a.kill)
	return a
}

func (a *apiServer) start() {
	t := a.t
	t.Helper()
	cmd := exec.Command(a.bin, a.args...)
	a.log = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = a.log, a.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting kube-apiserver: %v", err)
	}
	a.mu.Lock()
	a.cmd = cmd
	a.mu.Unlock()
	admin := a.client(adminToken)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body, err := admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		cancel()
		if err == nil && string(body) == "ok" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready in 3 minutes (%v); its log:\n%s", err, tail(a.log.String(), 4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kill stops the API server with SIGKILL and waits for it.
func (a *apiServer) kill() {
	a.mu.Lock()
	cmd := a.cmd
	a.cmd = nil
	a.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

func (a *apiServer) restConfig(token string) *rest.Config {
	return &rest.Config{Host: a.url, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS: 200, Burst: 400, Timeout: 30 * time.Second}
}

func (a *apiServer) client(token string) *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(a.restConfig(token))
	if err != nil {
		a.t.Fatal(err)
	}
	return cs
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// applyManifest creates every object of a deploy/kubernetes YAML file
// with the admin client; a kind the test does not know fails it.
func applyManifest(t *testing.T, admin *kubernetes.Clientset, name string, dryRun bool) []runtime.Object {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var objs []runtime.Object
	for i, doc := range strings.Split(string(raw), "\n---\n") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s document %d: %v", name, i, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = admin.CoreV1().Namespaces().Create(ctx, o, opts)
		case *corev1.ServiceAccount:
			_, err = admin.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
		case *corev1.ConfigMap:
			_, err = admin.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.ClusterRole:
			_, err = admin.RbacV1().ClusterRoles().Create(ctx, o, opts)
		case *rbacv1.ClusterRoleBinding:
			_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
		case *appsv1.DaemonSet:
			_, err = admin.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, opts)
		default:
			t.Fatalf("%s document %d: the test does not know how to create a %T", name, i, obj)
		}
		if err != nil {
			t.Fatalf("%s document %d (%T): %v", name, i, obj, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// proxyd is a `proxyd run` process the test started.
type proxyd struct {
	t       *testing.T
	bin     string
	cfgPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	lines   []string
	base    string
}

// buildProxyd builds the daemon from the main module.
func buildProxyd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "proxyd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/proxyd")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/proxyd: %v\n%s", err, out)
	}
	return bin
}

const proxydConfig = `shutdown_timeout = "10s"
[log]
level = "info"
[http]
listen = "127.0.0.1:%d"
api_token_file = %q
[gpu]
backend = "simulated"
poll_interval = "100ms"
[switcher]
enabled = true
state_dir = %q
max_parallel = 8
free_polls = 2
reconcile_interval = "50ms"
status_interval = "200ms"
retry_backoff = "1s"
[switcher.timeouts]
stop_miner = "10s"
verify_free = "10s"
start_ai = "%s"
drain_ai = "20s"
restore_mining = "10s"
[switcher.mining]
runtime = "simulated"
sim_memory_mib = 2048
sim_start_delay = "100ms"
sim_ready_delay = "200ms"
sim_stop_delay = "100ms"
[switcher.kubernetes]
enabled = true
node_name = %q
kubeconfig = %q
namespaces = ["ai"]
device_class = "gpu.nvidia.com"
idle_before_mining = "%s"
api_timeout = "2s"
`

func startProxyd(t *testing.T, bin, cfgPath string) *proxyd {
	t.Helper()
	p := &proxyd{t: t, bin: bin, cfgPath: cfgPath}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *proxyd) start() {
	t := p.t
	t.Helper()
	cmd := exec.Command(p.bin, "run", "--config", p.cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	p.waitFor("/readyz 200", 90*time.Second, func() bool { code, _ := p.get("/readyz"); return code == 200 })
}

// kill SIGKILLs proxyd (kill -9) and waits for it.
func (p *proxyd) kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

func (p *proxyd) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return tail(strings.Join(p.lines, "\n"), 20000)
}

func (p *proxyd) get(path string) (int, string) { return p.do(http.MethodGet, path, "") }

// do sends a request to proxyd's API; all but a GET carry body as JSON.
func (p *proxyd) do(method, path, body string) (int, string) {
	req, err := http.NewRequest(method, p.base+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getJSON GETs path, wants 200 and decodes the answer into v.
func (p *proxyd) getJSON(path string, v any) {
	p.t.Helper()
	code, body := p.get(path)
	if code != 200 {
		p.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
}

// waitFor polls cond every 50 ms until it holds or within passes.
func (p *proxyd) waitFor(what string, within time.Duration, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: not within %s; proxyd's log:\n%s", what, within, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type gpuView struct {
	UUID   string `json:"uuid"`
	Index  int    `json:"index"`
	Switch *struct {
		State      string `json:"state"`
		Contract   string `json:"contract"`
		Reason     string `json:"reason"`
		Kubernetes *struct {
			Device string   `json:"device"`
			Rule   string   `json:"rule"`
			Claims []string `json:"claims"`
			Lent   bool     `json:"lent"`
		} `json:"kubernetes"`
	} `json:"switch"`
}

func (p *proxyd) gpus() []gpuView {
	p.t.Helper()
	var v struct {
		GPUs []gpuView `json:"gpus"`
	}
	p.getJSON("/api/v1/gpus", &v)
	return v.GPUs
}

func (p *proxyd) states() map[string]string {
	out := map[string]string{}
	for _, g := range p.gpus() {
		if g.Switch != nil {
			out[g.UUID] = g.Switch.State
		}
	}
	return out
}

type journalEvent struct {
	Kind, Subject, From, To, Reason string
	Time                            time.Time
	Details                         map[string]any
}

// decisions returns the switcher's decisions about a GPU with a reason.
func (p *proxyd) decisions(gpu, reason string) []journalEvent {
	p.t.Helper()
	return p.switcherEvents(func(e journalEvent) bool { return e.Kind == "decision" && e.Subject == gpu && e.Reason == reason })
}

func (p *proxyd) transitions(gpu string) []journalEvent {
	p.t.Helper()
	return p.switcherEvents(func(e journalEvent) bool { return e.Kind == "transition" && e.Subject == gpu })
}

// switcherEvents returns the switcher's journal entries that keep says to.
func (p *proxyd) switcherEvents(keep func(journalEvent) bool) []journalEvent {
	p.t.Helper()
	var v struct {
		Events []journalEvent `json:"events"`
	}
	p.getJSON("/api/v1/events?component=switcher&limit=4096", &v)
	var out []journalEvent
	for _, e := range v.Events {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// kubeconfig writes a kubeconfig for proxyd's token against server.
func kubeconfig(t *testing.T, dir, server string) string {
	t.Helper()
	path := filepath.Join(dir, "kubeconfig")
	writeFile(t, path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: proxyd
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: proxyd}
current-context: test
`, server, proxydToken)))
	return path
}

// frontProxy stands between proxyd and the API server, so a test can act
// at the exact moment proxyd writes something (onRequest runs before the
// request is forwarded, onResponse after the answer came back and before
// proxyd sees it).
type frontProxy struct {
	srv        *httptest.Server
	mu         sync.Mutex
	onRequest  func(r *http.Request, body []byte) (forward bool)
	onResponse func(r *http.Request, status int)
}

func startFrontProxy(t *testing.T, target string) *frontProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	fp := &frontProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{TLSClientConfig: insecureTLS(), ForceAttemptHTTP2: false}
	rp.FlushInterval = -1
	// The API server away is a scenario, not news: keep the test log readable.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		fp.mu.Lock()
		f := fp.onResponse
		fp.mu.Unlock()
		if f != nil {
			f(resp.Request, resp.StatusCode)
		}
		return nil
	}
	fp.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.mu.Lock()
		f := fp.onRequest
		fp.mu.Unlock()
		if f != nil {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if !f(r, body) {
				// Dropped: as if the connection broke before the API
				// server got the request.
				http.Error(w, "dropped by the test", http.StatusServiceUnavailable)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	fp.srv.StartTLS()
	t.Cleanup(fp.srv.Close)
	return fp
}

// setOnRequest sets what runs before a request is forwarded; it may block
// (a hold the test releases) and may drop the request.
func (fp *frontProxy) setOnRequest(f func(r *http.Request, body []byte) bool) {
	fp.mu.Lock()
	fp.onRequest = f
	fp.mu.Unlock()
}

func (fp *frontProxy) setOnResponse(f func(r *http.Request, status int)) {
	fp.mu.Lock()
	fp.onResponse = f
	fp.mu.Unlock()
}

// proxydRules lists proxyd's rules on node by device name.
func proxydRules(t *testing.T, admin *kubernetes.Clientset) map[string]resourcev1.DeviceTaintRule {
	t.Helper()
	l, err := admin.ResourceV1().DeviceTaintRules().List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/managed-by=proxyd,mining.hashgate.io/node=" + node})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]resourcev1.DeviceTaintRule{}
	for _, r := range l.Items {
		if r.Spec.DeviceSelector == nil || r.Spec.DeviceSelector.Device == nil {
			t.Fatalf("proxyd's rule %s selects no device: %+v", r.Name, r.Spec)
		}
		out[*r.Spec.DeviceSelector.Device] = r
	}
	return out
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } // loopback test servers only
