# The README's two commands: `make demo` (main job) and `make test` (tests).
PY := .venv/bin/python

.PHONY: env browser-env emoji-data test unit lint demo thumbnails bench-perf bench-efficacy clean

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

# quick loop: unit and node tests only (no server, browser or lint)
unit: env emoji-data
	FIA_E2E=0 FIA_BROWSER=0 $(PY) -m pytest -q

demo: env
	$(PY) -m toyworld.demo

# workflows/<name>.jpg, the template browser's pictures: each graph in the newest frontend (re-run after editing one)
thumbnails: env browser-env
	./scripts/make-thumbnails.sh

bench-perf: env
	$(PY) bench/perf.py

bench-efficacy: env
	$(PY) bench/efficacy.py

clean:
	rm -rf out .pytest_cache
