# netroot: `make check` is what CI runs (see .ci/run). It installs the real peers the interop
# tests drive when it can (root on Debian/Ubuntu), then runs every check with peers required.

GO            ?= go
STATICCHECK   ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 3s
FUZZPKGS      ?= ./...
TESTTIMEOUT   ?= 30m

.PHONY: check peers fmt vet staticcheck test fuzz e2e demo bench

check: peers fmt vet staticcheck test fuzz

# Debian packages listed in .ci/packages/*.txt (apt-get, only what is missing).
peers:
	bash .ci/install-peers

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

# Interop tests are required here: a missing peer fails instead of skipping.
test:
	NETROOT_REQUIRE_PEERS=1 $(GO) test -race -timeout $(TESTTIMEOUT) ./...

# A short pass of every native fuzz target (seed corpus plus FUZZTIME of new inputs each);
# FUZZTIME=5m make fuzz is the long opt-in run, FUZZPKGS=./tftp/... narrows it.
fuzz:
	bash .ci/fuzz $(FUZZTIME) '$(FUZZPKGS)'

# The qemu network-boot test (root; builds and caches a guest kernel and initrd).
e2e:
	bash e2e/run.sh

demo:
	$(GO) run ./examples/netroot
