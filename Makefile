# Build, test, demo, benchmark and install the `calico` and `calico-ipam` CNI plugins and
# `calico-k8s`, the Kubernetes API reader `calico` runs from its own directory.
# Each target calls cargo or one script of scripts/.

# rustup installs cargo into ~/.cargo/bin, which is not on PATH under sudo or in CI.
export PATH := $(PATH):$(HOME)/.cargo/bin:/root/.cargo/bin

CARGO ?= cargo
PREFIX ?= /usr
DESTDIR ?=
CNI_BIN_DIR ?= /opt/cni/bin
RKT_PLUGIN_DIR ?= $(PREFIX)/lib/rkt/plugins/net
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BINARIES := calico calico-ipam calico-k8s

.PHONY: all build release test demo bench fuzz install clean

all: build

build:
	$(CARGO) build --workspace --locked

# The release binaries are linked statically (scripts/release.sh, README "Install") and land
# in $(TARGET_DIR)/<host triple>/release. They are files with their sources as prerequisites, so
# `make install` runs cargo only when a binary is missing or older than a source: on a machine
# without a Rust toolchain it installs binaries built elsewhere (copied into $(RELEASE_DIR)/).
# make's $(shell) does not see the PATH exported above, hence the explicit one.
PLUGIN_TRIPLE := $(or $(shell PATH='$(PATH)' rustc -vV 2>/dev/null | sed -n 's/^host: //p'),$(shell uname -m)-unknown-linux-gnu)
RELEASE_DIR := $(TARGET_DIR)/$(PLUGIN_TRIPLE)/release
RELEASE_BINARIES := $(addprefix $(RELEASE_DIR)/,$(BINARIES))
SOURCES := Cargo.toml Cargo.lock $(shell find common calico calico-ipam calico-k8s \
	-name '*.rs' -o -name Cargo.toml -o -name '*.proto')

release:
	scripts/release.sh

# cargo leaves a binary alone when a change (a comment) does not alter it: touch marks it current.
$(RELEASE_BINARIES) &: $(SOURCES)
	scripts/release.sh
	touch $(RELEASE_BINARIES)

test:
	scripts/test.sh

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

# Not part of test or CI: needs nightly and runs for FUZZ_SECONDS (default 60) per target.
fuzz:
	scripts/fuzz.sh

install: $(RELEASE_BINARIES)
	install -d $(DESTDIR)$(CNI_BIN_DIR) $(DESTDIR)$(RKT_PLUGIN_DIR)
	install -m 0755 $(RELEASE_BINARIES) $(DESTDIR)$(CNI_BIN_DIR)/
	install -m 0755 $(RELEASE_BINARIES) $(DESTDIR)$(RKT_PLUGIN_DIR)/

clean:
	$(CARGO) clean
