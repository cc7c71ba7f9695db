# The single entry point. Every target installs what it needs into .venv first.
#   make book        build the HTML book into _build/html
#   make test        run every test
#   make exercises   regenerate exercises/ (nbgrader's student release) from solutions/
#   make autograde   grade every submission in grading/submitted/ (A=<chapter>: one chapter)
#   make collect A=<chapter> FROM=<LMS zip or folder> [ROSTER=roster.csv]
#   make grade A=<chapter> [STUDENT=<id>]   make feedback A=<chapter>
#   make export A=<chapter> LMS=canvas|moodle [COLUMN="Chapter 4 (1234)"]
#   make extend A=<chapter> STUDENT=<id> DUE="2027-03-18 23:59"   make drop STUDENT=<id>
#                    the instructor's week (book/instructor_guide.md), nothing to activate
#   make bench       benchmarks
#   make checkpoints train the course's models to convergence into attention_data/checkpoints
#   make publish     the public release (book + exercises, no answers) into _build/public
#   make serve       read the built book on http://localhost:8000
#   make clean       remove build outputs (never submissions or the gradebook)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
ASSIGNMENTS := $(notdir $(wildcard solutions/ch*))
VENDOR := book/_vendor

.PHONY: install book test exercises autograde bench checkpoints clean lint vendor lock publish deploy serve
.PHONY: collect grade feedback export extend drop

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (the code uses datetime.UTC); found " + sys.version.split()[0] + ": set PYTHON=python3.11")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# MathJax 3 and the Jupyter widgets' JavaScript, from the npm registry, so that the book loads
# nothing from a CDN. Versions are pinned in book/vendor/package-lock.json.
vendor: $(VENDOR)/.vendored

$(VENDOR)/.vendored: book/vendor/package.json book/vendor/package-lock.json book/vendor/copy.sh
	bash book/vendor/copy.sh $(VENDOR)
	touch $@

# --all: re-read, and so re-execute, every page; a page's outputs also depend on autograder/,
# which Sphinx does not track.
book: install vendor
	$(BIN)/jupyter-book build . --all --warningiserror --keep-going --builder html
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

# Everything students may see, and nothing else (tools/publish.py refuses to finish otherwise).
publish: book
	$(PY) tools/publish.py _build/public

# Push _build/public to the public repository named in _config.yml (needs DEPLOY_KEY).
deploy:
	bash tools/deploy.sh

serve:
	@test -f _build/html/index.html || { echo "no built book: run make book first" >&2; exit 2; }
	$(PYTHON) -m http.server --bind 127.0.0.1 --directory _build/html 8000

exercises: install

	for a in $(ASSIGNMENTS); do $(BIN)/nbgrader generate_assignment "$$a" --force || exit 1; done

test: install vendor
	$(BIN)/ruff check autograder attention_data tests bench
	$(BIN)/python -m pytest -n 2 --dist loadgroup

autograde: install vendor
	$(BIN)/python -m autograder.engine.grade $(or $(A),$(ASSIGNMENTS))

# The instructor's week: each target says which variable it needs.
need = $(if $($(1)),,$(error $(2)))
INSTRUCTOR := $(BIN)/python -m autograder.instructor

collect: install
	$(call need,A,make collect A=<chapter> FROM=<zip or folder> [ROSTER=roster.csv])
	$(call need,FROM,make collect A=<chapter> FROM=<zip or folder> [ROSTER=roster.csv])
	$(INSTRUCTOR) collect $(A) "$(FROM)" $(if $(ROSTER),--roster "$(ROSTER)")

grade: install vendor
	$(call need,A,make grade A=<chapter> [STUDENT=<id>])
	$(BIN)/python -m autograder.engine.grade $(A) $(if $(STUDENT),--student $(STUDENT))

feedback: install vendor
	$(call need,A,make feedback A=<chapter>)
	$(INSTRUCTOR) feedback $(A)

export: install
	$(call need,A,make export A=<chapter> LMS=canvas|moodle [COLUMN="Chapter 4 (1234)"])
	$(call need,LMS,make export A=<chapter> LMS=canvas|moodle [COLUMN="Chapter 4 (1234)"])
	$(INSTRUCTOR) export $(A) --lms $(LMS) $(if $(COLUMN),--column "$(COLUMN)")

extend: install
	$(call need,A,make extend A=<chapter> STUDENT=<id> DUE="2027-03-18 23:59")
	$(call need,STUDENT,make extend A=<chapter> STUDENT=<id> DUE="2027-03-18 23:59")
	$(INSTRUCTOR) extend $(A) $(STUDENT) "$(DUE)"

drop: install
	$(call need,STUDENT,make drop STUDENT=<id>)
	$(INSTRUCTOR) drop $(STUDENT)

bench: install
	$(BIN)/python bench/bench_sdpa.py
	$(BIN)/python bench/bench_grader.py
	$(BIN)/python bench/bench_bpe.py

# Minutes per model on a CPU (nice: a long job), faster with DEVICE=cuda; MODELS= picks some.
checkpoints: install
	nice -n 10 $(BIN)/python -m attention_data.train $(MODELS) --device $(or $(DEVICE),cpu)

lock: install
	$(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt

clean:
	rm -rf _build $(VENDOR) .pytest_cache .ruff_cache
