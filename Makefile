# Two commands for a newcomer: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned: any other request pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[eval,test]'
	# ViSQOL v3 (Rust reimplementation); its Python wrapper's dependency has no wheel here,
	# so only the native scorer is used (see src/opencodec/eval/visqol.py).
	$(PY) -m pip install --quiet --no-deps audio-samples-qoe==0.1.2
	# The official package is the reference in tests; its declared torchaudio
	# dependency does not import here, so it is installed without dependencies.
	$(PY) -m pip install --quiet --no-deps encodec==0.1.1
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	# The browser tests (MUSHRA, serve) need Debian's chromium and chromedriver: installed here when
	# missing and we are root with apt-get; otherwise that test is skipped (or fails in CI,
	# which sets OPENCODEC_REQUIRE_BROWSER=1).
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; } \
		|| echo "warning: could not install chromium/chromedriver: the MUSHRA browser test will skip (or fail in CI)"; \
	else echo "note: chromium/chromedriver missing and not root: the MUSHRA browser test will be skipped"; fi
	# --durations: the slowest tests are named at the end, to keep the suite's time in view
	$(PY) -m pytest -q --durations=15

# Compress and decompress the bundled speech sample at 1.5/3/6/12 kbps with the bundled
# default model (offline); decoded files go to demo/out/.
demo: $(STAMP)
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
