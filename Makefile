# Two entry points (see README): `make build` (main job) and `make test`.
# Both create or refresh .venv at the repository root; nothing is installed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: build test venv clean pi-check

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the local CPU wheel (torch==2.13.0 in pyproject): any other
	# spec would pull gigabytes of CUDA packages.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# onnx2tf imports tf_keras, whose metadata asks for `tensorflow` (not -cpu).
	$(BIN)/python -m pip install --quiet --no-deps "tf-keras==2.21.0"
	touch $(STAMP)

venv: $(STAMP)

# The main job: every target for the embedded default model (model/weights/v2_ultra.pth),
# each file checked against PyTorch; bundles and their parity reports land in dist/.
build: $(STAMP)
	$(BIN)/featherface build --target all --arch v2-ultra --out dist

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Every file of dist/pi4 on an emulated Raspberry Pi 4 (qemu-aarch64 -cpu cortex-a72, Debian
# bookworm's arm64 Python 3.11, the SDK as the README installs it): golden-vector parity and
# detect against x86. The emulated Pi is cached in .pi-root/; see docs/pi-check.md.
# Variables: BUNDLE (default dist/pi4), LITERT (default ai-edge-litert, unpinned as in the README).
BUNDLE ?= dist/pi4
LITERT ?= ai-edge-litert
pi-check: $(STAMP)
	$(BIN)/python -m featherface.bench.pi_check --bundle "$(BUNDLE)" --litert "$(LITERT)"

clean:
	rm -rf dist build *.egg-info
