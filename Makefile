# overlayd: `make help` lists the targets. Quiet unless V=1.
.DELETE_ON_ERROR:
.DEFAULT_GOAL := build
SHELL := /bin/bash

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)"
endif

BUILD := build
BPF_OUT := $(BUILD)/bpf
BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_HDRS := $(wildcard bpf/include/*.h bpf/lib/*.h)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(BPF_OUT)/%.bpf.o,$(BPF_SRCS))
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null)
CLANG ?= clang
BPF_CFLAGS := -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) \
	-Ibpf/include -Ibpf -I/usr/include/$(MULTIARCH)
TS_SRCS := $(shell find agent cli metrics scripts test bench -name '*.ts' 2>/dev/null)
STAMP := $(BUILD)/.deps-stamp
TSC_STAMP := $(BUILD)/.tsc-stamp

# Debian packages the build, the tests and the demo need (command -> package).
APT_PKGS := clang:clang llvm-strip:llvm bpftool:bpftool ip:iproute2 \
	iptables:iptables nft:nftables etcd:etcd-server etcdctl:etcd-client iperf3:iperf3 \
	qperf:qperf ping:iputils-ping tcpdump:tcpdump nsenter:util-linux \
	prometheus:prometheus promtool:prometheus \
	/usr/lib/cni/bridge:containernetworking-plugins \
	/usr/include/bpf/libbpf.h:libbpf-dev \
	/usr/include/linux/bpf.h:linux-libc-dev \
	/usr/lib/python3/dist-packages/scapy:python3-scapy openssl:openssl \
	setpriv:util-linux capsh:libcap2-bin ethtool:ethtool \
	podman:podman runc:runc catatonit:catatonit debootstrap:debootstrap

.PHONY: help deps build bpf ts abi abi-check manifests-check check lint format test test-unit \
	test-bpf test-e2e image-args image-test demo demo-clean fuzz chaos bench bench-control clean

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | \
		awk -F'\t' '{printf "  %-16s %s\n", $$1, $$2}'

deps: $(STAMP) ## install missing Debian packages and npm modules
ifeq ($(SKIP_DEPS),1)
# Container builds install their own toolchain (see Dockerfile).
$(STAMP):
	$(Q)mkdir -p $(BUILD) && touch $@
else
$(STAMP): package.json package-lock.json Makefile
	$(call msg,DEPS,apt + npm)
	$(Q)missing=""; for pair in $(APT_PKGS); do \
		cmd=$${pair%%:*}; pkg=$${pair#*:}; \
		if [[ $$cmd == /* ]]; then [ -e $$cmd ] && continue; \
		else command -v $$cmd >/dev/null 2>&1 && continue; fi; \
		missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "  installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(Q)npm ci --no-audit --no-fund --loglevel=error >/dev/null
	$(Q)mkdir -p $(BUILD) && touch $@
endif

bpf: $(BPF_OBJS) ## compile the BPF objects

# Compile, then link with bpftool: the static linker finalizes the BTF
# DATASEC offsets that scripts/gen-abi.ts reads.
$(BPF_OUT)/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) | $(STAMP)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(BPF_OUT)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@.tmp.o
	$(Q)bpftool gen object $@ $@.tmp.o
	$(Q)rm -f $@.tmp.o

# The same objects with the trace hooks compiled out, for bench/progrun.ts.
BPF_NOTRACE_OBJS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf-notrace/%.bpf.o,$(BPF_SRCS))
$(BUILD)/bpf-notrace/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) | $(STAMP)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(BUILD)/bpf-notrace
	$(Q)$(CLANG) $(BPF_CFLAGS) -DOVL_NO_TRACE -c $< -o $@.tmp.o
	$(Q)bpftool gen object $@ $@.tmp.o
	$(Q)rm -f $@.tmp.o

ts: $(TSC_STAMP) ## compile the TypeScript
$(TSC_STAMP): $(TS_SRCS) tsconfig.json | $(STAMP)
	$(call msg,TSC,dist/)
	$(Q)npx tsc -p tsconfig.json
	$(Q)touch $@

# The commit this build is from (overlayd --version, overlayctl version, the
# image label). Outside a git checkout (the image's build stage) pass
# GIT_COMMIT=...; rewritten only when it changes, so nothing rebuilds.
GIT_COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
VERSION_JSON := $(BUILD)/version.json

.PHONY: version
version: | $(STAMP)
	$(Q)mkdir -p $(BUILD) && printf '{"commit":"%s"}\n' "$(GIT_COMMIT)" > $(VERSION_JSON).tmp && \
	if cmp -s $(VERSION_JSON).tmp $(VERSION_JSON); then rm -f $(VERSION_JSON).tmp; \
	else mv $(VERSION_JSON).tmp $(VERSION_JSON); fi

# etcd's gRPC codecs, generated once instead of on every start
# (agent/control/etcd-codec.ts); regenerated when etcd3 or protobufjs changes.
ETCD_CODEC := $(BUILD)/etcd-codec/index.json
$(ETCD_CODEC): $(TSC_STAMP) package-lock.json $(wildcard node_modules/etcd3/proto/*.proto)
	$(call msg,GEN,$(BUILD)/etcd-codec)
	$(Q)node dist/scripts/gen-etcd-codec.js $(BUILD)/etcd-codec >/dev/null

build: bpf ts version $(ETCD_CODEC) ## build everything (BPF objects, TypeScript, etcd codecs)

abi: bpf ts ## regenerate agent/bpf/abi.generated.ts from the objects' BTF
	$(call msg,GEN,agent/bpf/abi.generated.ts)
	$(Q)node dist/scripts/gen-abi.js $(BPF_OUT) agent/bpf/abi.generated.ts
	$(Q)npx prettier --log-level warn --write agent/bpf/abi.generated.ts

abi-check: bpf ts ## fail if the generated ABI is stale
	$(call msg,CHECK,abi)
	$(Q)tmp=$$(mktemp --suffix=.ts) && \
	node dist/scripts/gen-abi.js $(BPF_OUT) $$tmp && \
	npx prettier --log-level warn --stdin-filepath agent/bpf/abi.generated.ts < $$tmp > $$tmp.fmt && \
	if ! diff -u agent/bpf/abi.generated.ts $$tmp.fmt; then \
		echo "abi-check: agent/bpf/abi.generated.ts is stale; run 'make abi'" >&2; \
		rm -f $$tmp $$tmp.fmt; exit 1; fi; rm -f $$tmp $$tmp.fmt

manifests-check: ts ## deploy/**/*.yaml against the Kubernetes API schemas and the DaemonSet rules
	$(call msg,CHECK,manifests)
	$(Q)node dist/scripts/check-manifests.js

check: $(STAMP) abi-check manifests-check ## typecheck, lint, format check, ABI and manifest checks
	$(call msg,CHECK,tsc eslint prettier)
	$(Q)npx tsc -p tsconfig.json --noEmit
	$(Q)npx eslint --max-warnings 0 .
	$(Q)npx prettier --log-level warn --check .

format: $(STAMP) ## rewrite files with prettier
	$(Q)npx prettier --log-level warn --write .

test: build check ## build, check and run every test tier (root)
	$(call msg,TEST,unit bpf e2e image)
	$(Q)node test/run.js

test-unit: build ## unit tier only
	$(Q)node test/run.js unit

test-bpf: build ## BPF_PROG_RUN fixtures only (root)
	$(Q)node test/run.js bpf

test-e2e: build ## end-to-end tier only (root, namespaces)
	$(Q)node test/run.js e2e

image-args: build ## the podman build --build-arg flags that label an image of this checkout
	$(Q)node -p 'const b = require("./dist/agent/version").buildInfo(); ["GIT_COMMIT=" + b.commit, "VERSION=" + b.version, "ABI_HASH=" + b.abi].map((a) => "--build-arg " + a).join(" ")'

image-test: build ## build deploy/Dockerfile with podman and run it as a cluster node (root)
	$(Q)node test/run.js image

demo: build ## local etcd + 3 nodes in namespaces, pods pinging across (KEEP=1 keeps it)
	$(Q)node dist/scripts/demo.js

demo-clean: ## remove what a KEEP=1 demo left running
	$(Q)node dist/scripts/demo.js clean

FUZZ_N ?= 1000000
FUZZ_SEED ?=
fuzz: build ## differential fuzzing of the programs against test/fuzz/model.ts (root; FUZZ_N, FUZZ_SEED)
	$(Q)node dist/test/fuzz/run.js --n $(FUZZ_N) --seed $(FUZZ_SEED)

CHAOS_S ?= 600
CHAOS_SEED ?=
chaos: build ## chaos soak: faults under traffic on 4 nodes and a 3-member etcd (root; CHAOS_S, CHAOS_SEED)
	$(Q)node dist/test/chaos/run.js --seconds $(CHAOS_S) --seed $(CHAOS_SEED)

bench: build $(BPF_NOTRACE_OBJS) ## data path benchmark: host-gw vs flannel VXLAN vs overlayd (root)
	$(Q)node dist/bench/datapath.js

# The churn soak at 5,000 leases: 120 s keeps a run near ten minutes; the
# issue's 30 minutes is BENCH_CHURN_S=1800 (about 28 minutes more).
BENCH_CHURN_S ?= 120
bench-control: build ## control plane benchmark against a real etcd (root; BENCH_CHURN_S=120, 1800 for the 30-minute soak; BENCH_STORM=50,200,500)
	$(Q)BENCH_CHURN_S=$(BENCH_CHURN_S) node dist/bench/control.js

clean: ## remove build output
	rm -rf $(BUILD) dist
