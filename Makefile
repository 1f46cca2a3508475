# Developer and CI entry points. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export HYPOTHESIS_PROFILE ?= dev

.PHONY: all deps venv build test test-python test-rust lint fmt bench xen-test xen-test-pvh xen-bench clean \
	ansible-units ansible-sanity bench-ansible \
	fuzz fuzz-ci fuzz-build

all: test

# System packages the tests need: Xen's headers (the C ABI check), Debian's libvirt
# bindings (the libvirt-python baseline of the benchmarks), QEMU (the QMP and vCPU
# hotplug tests of tests/qmp; their Linux guest is fetched by the tests themselves with
# apt-get download, never installed), Prometheus and promtool (a real server scrapes the
# exporter in tests/test_exporter.py) and tmux (tests/test_top.py drives `xenvcpu top` in
# it). Root installs them; anyone else is told what is missing.
DEB_DEPS := libxen-dev python3-libvirt qemu-system-x86 prometheus tmux
deps:
	@if ! [ -f /usr/include/xen/domctl.h ] || ! /usr/bin/python3 -c "import libvirt" 2>/dev/null \
	    || ! command -v qemu-system-x86_64 >/dev/null || ! command -v prometheus >/dev/null \
	    || ! command -v promtool >/dev/null || ! command -v tmux >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        $(DEB_DEPS) >/dev/null) \
	    || { echo "deps: could not install $(DEB_DEPS)"; exit 1; }; \
	  else echo "deps: run 'sudo apt-get install $(DEB_DEPS)'"; exit 1; fi; \
	fi

$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -U pip
	$(VPY) -m pip install -q "maturin>=1.5,<2" "pytest>=7" "hypothesis>=6" "pytest-benchmark>=4" \
	    "numpy>=1.22" "ruff>=0.5" "mypy>=1.10" typing_extensions "prometheus_client>=0.16"
	# the Ansible collection's tests (pyproject's ansible extra: one ansible-core minor)
	$(VPY) -m pip install -q "ansible-core>=2.19,<2.20" "pytest-xdist>=3" "pytest-mock>=3"
	touch $@

venv: $(VENV)/.stamp

# Release build: the benchmarks and the smoke runs measure what users get.
build: venv
	$(VENV)/bin/maturin develop --release -q

test: deps build test-python test-rust ansible-units

# PYTEST_JUNIT=path also writes a JUnit report (CI sums its counts).
test-python:
	$(VPY) -m pytest $(if $(PYTEST_JUNIT),--junitxml=$(PYTEST_JUNIT))

test-rust:
	cargo test -p xenvcpu-core

# The Ansible collection (docs/ansible.md). Its integration (real ansible-playbook runs on
# lasting simulated hosts) is tests/test_ansible.py, part of test-python; these run
# ansible-test from the collection's directory, as ansible-test requires, with the venv's
# ansible-core. Sanity makes a virtual environment per check: seed_get_pip.py puts an
# offline stand-in where ansible-test would download its pip bootstrap script.
COLLECTION := ansible/ansible_collections/xenvcpu/xen
ANSIBLE_TEST = cd $(COLLECTION) && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ansible-test
VPY_VERSION = $$($(CURDIR)/$(VPY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

ansible-units: build
	$(ANSIBLE_TEST) units --local --python $(VPY_VERSION)
	$(if $(PYTEST_JUNIT),cp $(COLLECTION)/tests/output/junit/python*-modules-units.xml \
	    $(dir $(PYTEST_JUNIT))ansible-units.xml)

ansible-sanity: build
	$(VPY) ansible/seed_get_pip.py
	$(ANSIBLE_TEST) sanity --local --python $(VPY_VERSION)

# Needs the built module: stubtest compares _native.pyi with what the module really has.
lint: build
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet
	$(VENV)/bin/python -m mypy.stubtest xenvcpu._native
	$(VENV)/bin/ruff check python tests benches ansible
	$(VENV)/bin/ruff format --check python tests benches ansible
	$(VENV)/bin/mypy --strict
	MYPYPATH=python $(VENV)/bin/mypy --strict --config-file /dev/null tests/xen
	$(VENV)/bin/mypy --config-file ansible/mypy.ini -p ansible_collections.xenvcpu.xen
	$(VENV)/bin/mypy --config-file ansible/mypy.ini ansible/seed_get_pip.py

fmt: venv
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benches ansible
	$(VENV)/bin/ruff check --fix python tests benches ansible

# Timed benchmarks; rewrites the tables in docs/benchmarks.md.
bench: build
	$(VPY) benches/report.py

# One ansible-playbook run against 1 to 50 lasting simulated hosts (a few minutes); rewrites
# the fleet table of docs/ansible.md.
bench-ansible: build
	$(VPY) benches/report.py --fleet

# Real Xen 4.17 under QEMU (see docs/lab.md). Runs tests/xen and one untimed round of
# each benchmarks/xen case.
xen-test:
	$(PY) tests/xen/harness.py

# The running PVH guest's proof alone: the guest-type test modules with the PV and PVH guests
# (multi-threaded TCG, which the PVH guest needs; a few minutes, docs/lab.md "In CI").
xen-test-pvh:
	XEN_TEST_GUESTS=pv,pvh \
	XEN_TEST_PATHS="tests/xen/test_guest_types_api.py tests/xen/test_guest_types.py" \
	    $(PY) tests/xen/harness.py

# Timed benchmarks on real Xen (xenvcpu vs a libxenctrl C loop and xl); rewrites the lab
# table of docs/benchmarks.md.
LAB_BENCH_OUT ?= /var/tmp/xenvcpu-lab/bench-run
xen-bench:
	XEN_TEST_PATHS=benches/xen XEN_TEST_OUT=$(LAB_BENCH_OUT) XEN_TEST_NO_DOMU=1 \
	XEN_TEST_ARGS="--benchmark-enable --benchmark-json=/mnt/out/bench-lab.json --benchmark-min-rounds=5 --benchmark-max-time=2" \
	    $(PY) tests/xen/harness.py
	$(PY) benches/report.py --lab $(LAB_BENCH_OUT)/share/bench-lab.json

# Coverage-guided fuzzing of the Rust core's parsers with libFuzzer, on stable Rust: the
# flags cargo-fuzz would pass (without a sanitizer), so no nightly and no cargo-fuzz install.
# `make fuzz` runs every target FUZZ_TIME seconds (corpus in fuzz/corpus, crashes in
# fuzz/artifacts); `make fuzz-ci` replays the seeds and regressions, then fuzzes each target
# FUZZ_CI_TIME seconds from a fresh corpus. A crash fails the target.
FUZZ_TARGETS := cpulist from_bytes sim_params sim_toml sim_hypercall sim_state
FUZZ_TIME ?= 60
FUZZ_CI_TIME ?= 15
FUZZ_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_BIN := fuzz/target/$(FUZZ_TRIPLE)/release
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
	-Cllvm-args=-sanitizer-coverage-stack-depth --cfg fuzzing -Cdebug-assertions -Ccodegen-units=1

fuzz-build:
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" cargo build --release --quiet --target $(FUZZ_TRIPLE)

fuzz: fuzz-build
	@set -o pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t fuzz/artifacts/$$t fuzz/seeds/$$t fuzz/regressions/$$t; \
	  echo "fuzz: $$t for $(FUZZ_TIME) s"; \
	  $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 -timeout=10 \
	      -artifact_prefix=fuzz/artifacts/$$t/ fuzz/corpus/$$t fuzz/seeds/$$t fuzz/regressions/$$t \
	      2>&1 | tail -n 3 || exit 1; \
	done

fuzz-ci: fuzz-build
	@set -o pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/seeds/$$t fuzz/regressions/$$t; \
	  $(FUZZ_BIN)/$$t -runs=0 fuzz/seeds/$$t fuzz/regressions/$$t >/dev/null 2>&1 \
	      || { echo "fuzz: $$t fails on a kept input"; exit 1; }; \
	  work=$$(mktemp -d); \
	  $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_CI_TIME) -rss_limit_mb=2048 -timeout=10 \
	      -artifact_prefix=$$work/ $$work fuzz/seeds/$$t >$$work/log 2>&1 \
	      || { tail -n 30 $$work/log; echo "fuzz: $$t crashed: $$(ls $$work/crash-* 2>/dev/null)"; exit 1; }; \
	  echo "fuzz: $$t: $$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' $$work/log)"; \
	  rm -rf $$work; \
	done

clean:
	rm -rf $(VENV) target dist
