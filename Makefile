# The book's task runner. Two commands matter (README.md):
#   make book   build the rendered book into _build/html
#   make test   run every test (lib, notebooks in the quick profile, book build, browser)
# Both create the virtual environment (.venv) when it is absent.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
SHARED  ?= ../shared
PROFILE ?= full
DEVICE  ?= auto
NOTEBOOKS ?=
THREADS ?=
JOBS    ?= 2

.PHONY: book test install data mathjax browser execute lint clean setup-cells

$(VENV)/.installed: requirements.txt lib/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

# Offline copies of real data sets: linked (never copied into, never written) into data/.
data: install
	@if [ -d "$(SHARED)/data" ]; then $(PY) -m dlbook.data link $(SHARED)/data --root data; \
	else echo "no $(SHARED)/data: data sets are downloaded into data/ on first use"; fi

# MathJax served with the book, so that equations typeset offline.
mathjax: _assets/mathjax/tex-chtml.js
_assets/mathjax/tex-chtml.js:
	mkdir -p .cache/npm _assets/mathjax
	npm install --silent --no-audit --no-fund --prefix .cache/npm mathjax@3
	cd .cache/npm/node_modules/mathjax/es5 && cp -r tex-chtml.js input output ui a11y adaptors $(CURDIR)/_assets/mathjax/

# Headless Chromium and its driver for the browser test (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

book: install mathjax
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html/index.html"

test: install data mathjax browser
	$(VENV)/bin/pytest tests chapters --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/sanitize.cfg -n $(JOBS) --dist loadscope

# Re-execute notebooks in place (default: all, full profile) and record their times.
#   make execute PROFILE=full DEVICE=cuda NOTEBOOKS="chapters/01_mlp/mlp_forward.ipynb"
#   THREADS=1 pins torch to one CPU thread (DLBOOK_THREADS), for results that do not
#   depend on the machine's core count.
execute: install data
	$(if $(THREADS),DLBOOK_THREADS=$(THREADS) )$(PY) -m dlbook.execute --profile $(PROFILE) --device $(DEVICE) $(NOTEBOOKS)

# After changing repository.url/branch in _config.yml: rewrite every notebook's setup cell.
setup-cells: install
	$(PY) -m dlbook.notebook setup-cells

lint:
	$(PY) $(SHARED)/tools/book_lint.py

clean:
	rm -rf _build .cache/jupyter
