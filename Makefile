# The README's two commands: `make demo` (main job) and `make test` (tests).
PY := .venv/bin/python

.PHONY: env browser-env test unit lint demo bench-perf bench-official bench-efficacy clean

env:
	./scripts/provision.sh

browser-env:
	./scripts/provision-browser.sh

lint: env
	$(PY) -m ruff check .

# the whole suite once per ComfyUI version: 0.3.75, and each tree in ../shared/comfyui/ (scripts/test.sh)
test: env browser-env lint
	./scripts/test.sh

# quick loop: unit and node tests only (no server, browser or lint)
unit: env
	FIA_E2E=0 FIA_BROWSER=0 $(PY) -m pytest -q

demo: env
	$(PY) -m toyworld.demo

# writes out/bench/perf.{json,md} and the committed report the docs' tables come from; `make test` runs --quick
bench-perf: env
	$(PY) bench/perf.py --report bench/reports/perf.json
	$(PY) bench/report_tables.py

# the official code's job (three objects x 30 pairs, the fixture's layout), the pack's time side by side
bench-official: env
	$(PY) bench/official.py --report bench/reports/official.json
	$(PY) bench/report_tables.py

bench-efficacy: env
	$(PY) bench/efficacy.py

clean:
	rm -rf out .pytest_cache
