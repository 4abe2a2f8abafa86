# netroot: `make check` is what CI runs (see .ci/run). It installs the real peers the interop
# tests drive when it can (root on Debian/Ubuntu), then runs every check with peers required.

GO            ?= go
STATICCHECK   ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 3s
FUZZPKGS      ?= ./...
TESTTIMEOUT   ?= 30m

.PHONY: check peers fmt vet staticcheck test fuzz e2e e2e-boot e2e-rollforward e2e-firmware e2e-kiwi e2e-replica demo bench

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

# The qemu network-boot tests (root; each builds what it needs once and caches it outside the
# clone: a guest kernel and initrd, a real KIWI image). `make e2e` runs them all; CI runs them
# with E2E_SERVER=netroot (run.sh then skips the boots from the reference servers).
e2e: e2e-boot e2e-rollforward e2e-firmware e2e-kiwi e2e-replica

# PXE boots over NBD, AoE and NBD read-only, from netroot serve (and the reference servers).
e2e-boot:
	bash e2e/run.sh

# A new build (SIGHUP) and a new binary (SIGUSR2) under a running guest; a second guest gets
# the new build.
e2e-rollforward:
	bash e2e/rollforward.sh

# BIOS (iPXE over HTTP, pxelinux over TFTP), UEFI with Secure Boot (shim, GRUB, signed kernel)
# and UEFI HTTP boot (iPXE, kernel and initrd over HTTP), the boot information from netroot's
# proxyDHCP only.
e2e-firmware:
	bash e2e/firmware.sh

# An image that KIWI NG itself built (kiwi-ng from Debian's packages), booted over NBD.
e2e-kiwi:
	bash e2e/kiwi.sh

# Replicas with no local image: builds in Ceph RGW (S3), pushed with netroot image push; a
# guest boots over NBD from one, then another boots over AoE from two replicas exporting the
# same shelf.slot and keeps reading while the one that answered it is killed (kernel multipath).
e2e-replica:
	bash e2e/replica.sh

demo:
	$(GO) run ./examples/netroot
