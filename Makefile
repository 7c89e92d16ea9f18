# proxyd build, test and install. `make help` lists the targets.

GO      ?= go
PREFIX  ?= /usr
# systemd looks for units under /etc and /usr/lib (and /usr/local/lib on most distributions).
UNITDIR ?= $(PREFIX)/lib/systemd/system
DESTDIR ?=
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w \
	-X github.com/hashgate/proxyd/internal/version.Version=$(VERSION) \
	-X github.com/hashgate/proxyd/internal/version.Commit=$(COMMIT)

# The kube-apiserver the Kubernetes node agent's tests run (test/kubernetes,
# its own module): built once into GOBIN (or GOPATH/bin), rebuilt only when
# its version differs; Go's build cache keeps the compiled packages (no
# -trimpath: they are shared with `go test` of test/kubernetes).
KUBE_VERSION   ?= v1.37.2
KUBE_BIN       ?= $(or $(shell $(GO) env GOBIN),$(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin)
KUBE_APISERVER ?= $(KUBE_BIN)/kube-apiserver
KUBE_LDFLAGS   := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION)

.PHONY: help build test lint fuzz verify-systemd install deb deb-check clean kube-apiserver kube-test

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/proxyd with version and commit stamped in
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/proxyd ./cmd/proxyd

test: build ## vet, race-enabled tests, systemd unit verification (what CI runs)
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	./scripts/verify-systemd.sh bin/proxyd

kube-apiserver: ## build the kube-apiserver the Kubernetes tests run into GOBIN (first time: minutes)
	@if "$(KUBE_APISERVER)" --version 2>/dev/null | grep -qx "Kubernetes $(KUBE_VERSION)"; then \
		echo "kube-apiserver $(KUBE_VERSION) is at $(KUBE_APISERVER)"; \
	else \
		echo "building kube-apiserver $(KUBE_VERSION) into $(KUBE_APISERVER)"; \
		cd test/kubernetes && $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o "$(KUBE_APISERVER)" k8s.io/kubernetes/cmd/kube-apiserver; \
	fi

kube-test: kube-apiserver ## the node agent's acceptance tests against a real kube-apiserver and etcd (test/kubernetes)
	cd test/kubernetes && $(GO) vet ./... && KUBE_APISERVER="$(KUBE_APISERVER)" $(GO) test -count=1 -timeout 20m -v ./...

GOLANGCI_LINT ?= golangci-lint
lint: ## gofmt, go vet and golangci-lint (.golangci.yml: layering and no testing in production code)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -parallel 1 $$pkg || exit 1; \
	  done; \
	done

verify-systemd: build ## systemd-analyze verify the unit
	./scripts/verify-systemd.sh bin/proxyd

install: ## install the built bin/proxyd, unit, sysusers, tmpfiles and example config (run `make build` first, as yourself; then this as root)
	@test -x bin/proxyd || { echo "install: bin/proxyd is not built. Run 'make build' as your user first (root may not have go on its PATH), then 'sudo make install'." >&2; exit 1; }
	install -D -m 0755 bin/proxyd $(DESTDIR)$(PREFIX)/bin/proxyd
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's#/usr/bin/proxyd#$(PREFIX)/bin/proxyd#g' systemd/proxyd.service >$(DESTDIR)$(UNITDIR)/proxyd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/proxyd.service
	install -D -m 0644 systemd/proxyd.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/proxyd.conf
	install -D -m 0644 systemd/proxyd.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/proxyd.conf
	install -d -m 0750 $(DESTDIR)/etc/proxyd
	@if [ -e $(DESTDIR)/etc/proxyd/proxyd.toml ]; then \
	  echo "keeping existing /etc/proxyd/proxyd.toml (example at configs/proxyd.toml)"; \
	else install -m 0640 configs/proxyd.toml $(DESTDIR)/etc/proxyd/proxyd.toml; fi
	@echo "next: systemd-sysusers && systemd-tmpfiles --create && chgrp -R proxyd /etc/proxyd && systemctl daemon-reload && systemctl enable --now proxyd"

deb: build ## build dist/proxyd_<version>_<arch>.deb with nfpm (packaging/deb, its own module)
	cd packaging/deb && $(GO) run . --binary ../../bin/proxyd --version $(VERSION) --out ../../dist --repo ../..

deb-check: deb ## build the .deb, then install, check and purge it on this machine (root; what CI runs)
	./scripts/deb-check.sh

clean: ## remove build output
	rm -rf bin dist
