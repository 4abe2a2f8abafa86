# netroot: `make check` is what CI runs (see .ci/run). It installs the real peers the interop
# tests drive when it can (root on Debian/Ubuntu), then runs every check with peers required.

GO            ?= go
STATICCHECK   ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 3s
TESTTIMEOUT   ?= 30m

.PHONY: check peers fmt vet staticcheck test fuzz e2e e2e-extra demo bench

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

# A short pass of every native fuzz target (seed corpus plus FUZZTIME of new inputs each).
fuzz:
	bash .ci/fuzz $(FUZZTIME)

# The qemu network-boot test (root; builds and caches a guest kernel and initrd).
e2e:
	bash e2e/run.sh

# More qemu boots through `netroot serve` (root): a roll-forward (SIGHUP) and binary upgrade
# (SIGUSR2) under a running guest, and a boot from a replica whose only storage is a throw-away
# Ceph RGW. Each takes the e2e lock so that it never shares the CPU with another qemu boot.
E2E_LOCK ?= flock /tmp/netroot-e2e.lock
e2e-extra:
	$(E2E_LOCK) bash e2e/rollforward.sh
	$(E2E_LOCK) bash e2e/replica.sh

demo:
	$(GO) run ./examples/netroot
