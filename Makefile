# The README's two commands: `make demo` (main job) and `make test` (tests).
PY := .venv/bin/python

.PHONY: env browser-env emoji-data test unit lint demo shapes-demo thumbnails bench-perf bench-official bench-efficacy clean

env:
	./scripts/provision.sh

browser-env:
	./scripts/provision-browser.sh

# EmojiWorld's images: npm packages fetched by name, checked (SHA-256) and rendered to .cache/emojiworld/
emoji-data: env
	$(PY) -m toyworld.emoji.data

lint: env
	$(PY) -m ruff check .

# the whole suite once per ComfyUI version: 0.3.75, and each tree in ../shared/comfyui/ (scripts/test.sh)
test: env browser-env emoji-data lint
	./scripts/test.sh

# quick loop: unit and node tests only, about a minute (deselects the slow, toyworld, server and
# browser marks; no lint). `make test` runs everything.
unit: env
	$(PY) -m pytest -q -m "not slow and not toyworld and not server and not browser"

# the main job: FIA on EmojiWorld, three objects and a style at once (out/demo/: grid, mask, report, verdict)
demo: env emoji-data
	$(PY) -m toyworld.emoji.demo

# the same on the shapes world (ToyWorld v3: red, circle and striped; out/shapes_demo/)
shapes-demo: env
	$(PY) -m toyworld.experiments.demo

# workflows/<name>.jpg, the template browser's pictures: each graph in the newest frontend (re-run after editing one)
thumbnails: env browser-env
	./scripts/make-thumbnails.sh

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
