# kmexplain: two commands do everything (see README.md)
#   make book   set up .venv and build the book strictly   -> _build/html/index.html
#   make test   set up .venv and run all the tests (unit and the package's docstring
#               examples, every chapter in the smoke profile, every chapter on the paper
#               profile's code path on CUB/ResNet34 stand-ins, the strict quick-profile
#               book build, the browser test)
#   make test-wheel   the release: sdist and wheel (python -m build), twine check, the wheel
#               installed in a clean venv (not the checkout) and the README's "Use it on your own
#               CNN" example run there (make test runs it after the unit stage)
#   make test-colab   Colab's package versions (colab-pins.txt) in a separate venv, the
#               package installed on top as the Colab cell does, every chapter in the smoke
#               profile (.ci/run runs it after make test)
# Needs Python 3.11 and pip; npm (optional) makes widgets and math work offline;
# chromium (optional outside CI) runs the browser test.

PYTHON      ?= python3.11
VENV        ?= .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.kmex-installed
TORCH_PINS  := torch==2.14.1 torchvision==0.29.1
BOOK_PROFILE ?= $(or $(KMEX_PROFILE),quick)
BOOK_EXECUTE ?=
NB_WORKERS  ?= 2
COLAB_VENV  ?= .venv-colab
COLAB_PINS  := colab-pins.txt
DIST        ?= _build/dist
WHEEL_VENV  ?= _build/wheel-venv
# the version the wheel is built as: the one place it lives (pyproject.toml reads it too)
VERSION     := $(shell sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' kmexplain_utils/__init__.py)
# every docstring example of the package runs as a doctest in the unit stage
DOCTESTS    := -q --doctest-modules kmexplain_utils

export KMEX_PROGRESS := 0
export PYTHONDONTWRITEBYTECODE := 1

# run pytest for one stage (tests use the smoke profile whatever KMEX_PROFILE says; $(3): another
# interpreter);
# exit code 5 ("no tests collected") is an error with a clear message
define pytest_stage
	@echo "==> tests: $(1)"
	@KMEX_PROFILE=smoke $(or $(3),$(BIN)/python) -m pytest $(2); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: stage '$(1)' collected no tests (pytest exit code 5): the suite is incomplete."; fi; \
	exit $$rc
endef

.PHONY: install book book-student widgets test test-unit test-wheel test-notebooks test-paper test-colab test-site test-student-site clean clean-cache student

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[book,test,bench,release]"
	@touch $(STAMP)

widgets:
	@bash scripts/fetch_widget_js.sh

# KMEX_STRICT_CHECKS=1: a chapter's hidden check (kmexplain_utils.chapters.notebook.check) that fails
# raises and fails the build (elsewhere, e.g. in Colab, it only warns). book/_ext/kmex_assets.py
# re-executes every chapter when kmexplain_utils/, pyproject.toml or the profile changed.
book: install widgets
	KMEX_STRICT_CHECKS=1 KMEX_PROFILE=$(BOOK_PROFILE) KMEX_BOOK_EXECUTE=$(BOOK_EXECUTE) \
		KMEX_FIGURE_LOG=$(CURDIR)/_build/figure_panels.jsonl \
		$(BIN)/jupyter-book build . -W -n --keep-going
	@$(BIN)/python scripts/book_times.py --build _build
	@echo "==> book: $(CURDIR)/_build/html/index.html"

test: install widgets
	$(call pytest_stage,unit,-q -m "not notebooks and not paper_smoke and not book and not student_site")
	$(call pytest_stage,unit (docstring examples),$(DOCTESTS))
	$(MAKE) --no-print-directory test-wheel
	$(call pytest_stage,notebooks (smoke profile),-q -m notebooks -n $(NB_WORKERS))
	$(call pytest_stage,notebooks (paper profile's code path on stand-ins),-q -m paper_smoke -n $(NB_WORKERS))
	$(MAKE) --no-print-directory book BOOK_PROFILE=quick
	$(call pytest_stage,built site (browser),-q -m book)
	$(MAKE) --no-print-directory book-student
	$(call pytest_stage,student site (browser),-q -m student_site tests/test_student_site.py)

test-unit: install
	$(call pytest_stage,unit,-q -m "not notebooks and not paper_smoke and not book and not student_site")
	$(call pytest_stage,unit (docstring examples),$(DOCTESTS))

test-notebooks: install
	$(call pytest_stage,notebooks (smoke profile),-q -m notebooks -n $(NB_WORKERS))

test-paper: install
	$(call pytest_stage,notebooks (paper profile's code path on stand-ins),-q -m paper_smoke -n $(NB_WORKERS))

# The release: the sdist and the wheel built from the checkout (no build isolation: the venv's
# setuptools, so nothing is downloaded), their metadata checked by twine, then the wheel installed
# into a fresh venv with nothing of the checkout (torch at the pinned versions, pip takes the rest
# from its cache or the index) and the README's "Use it on your own CNN" example run there from a
# temporary directory outside the checkout, PYTHONPATH unset (scripts/check_wheel.py also checks
# that kmexplain_utils is imported from that venv and has the version the wheel was built as). The venv
# (about 5.5 GB: a CUDA build of torch) is removed afterwards; its install log stays beside it.
test-wheel: install
	@echo "==> release: sdist and wheel of kmexplain-utils $(VERSION) -> $(DIST)"
	@rm -rf $(DIST) $(WHEEL_VENV) && mkdir -p $(dir $(DIST))
	@$(BIN)/python -m build --no-isolation --outdir $(DIST) . > $(DIST).log 2>&1 || { tail -n 40 $(DIST).log; exit 1; }
	@test -f $(DIST)/kmexplain_utils-$(VERSION)-py3-none-any.whl && test -f $(DIST)/kmexplain_utils-$(VERSION).tar.gz \
		|| { echo "ERROR: $(DIST) lacks the wheel or the sdist of version $(VERSION):"; ls $(DIST); exit 1; }
	$(BIN)/python -m twine check --strict $(DIST)/*
	@echo "==> release: the wheel in a clean venv $(WHEEL_VENV) (log: $(WHEEL_VENV).log)"
	@$(PYTHON) -m venv $(WHEEL_VENV)
	@start=$$(date +%s); \
	env -u PYTHONPATH $(WHEEL_VENV)/bin/python -m pip install $(TORCH_PINS) $(DIST)/kmexplain_utils-$(VERSION)-py3-none-any.whl \
		> $(WHEEL_VENV).log 2>&1 || { tail -n 40 $(WHEEL_VENV).log; exit 1; }; \
	echo "    installed in $$(( $$(date +%s) - start )) s"
	@tmp=$$(mktemp -d) && cd $$tmp && env -u PYTHONPATH -u PYTHONHOME KMEX_CACHE=$$tmp/cache \
		$(abspath $(WHEEL_VENV))/bin/python $(CURDIR)/scripts/check_wheel.py $(CURDIR)/README.md --version $(VERSION); \
		rc=$$?; rm -rf $$tmp $(abspath $(WHEEL_VENV)); exit $$rc

# Colab's versions: a separate venv with exactly colab-pins.txt, then the package installed from
# this checkout the way the Colab cell installs it from GitHub (pip install "kmexplain-utils[real]",
# which must keep every pin: checked after the install), then every chapter in the smoke profile.
# The venv is rebuilt when colab-pins.txt changes; the package is reinstalled at every run.
$(COLAB_VENV)/.kmex-pins: $(COLAB_PINS)
	rm -rf $(COLAB_VENV)
	$(PYTHON) -m venv $(COLAB_VENV)
	@echo "==> Colab pins: installing $(COLAB_PINS) into $(COLAB_VENV) (log: $(COLAB_VENV)/install.log)"
	@$(COLAB_VENV)/bin/python -m pip install -r $(COLAB_PINS) > $(COLAB_VENV)/install.log 2>&1 \
		|| { tail -n 40 $(COLAB_VENV)/install.log; exit 1; }
	@$(COLAB_VENV)/bin/python -m pip install -c $(COLAB_PINS) pytest pytest-xdist nbclient nbformat pyyaml \
		>> $(COLAB_VENV)/install.log 2>&1 || { tail -n 40 $(COLAB_VENV)/install.log; exit 1; }
	@touch $@

test-colab: $(COLAB_VENV)/.kmex-pins
	@echo "==> Colab pins: installing the package as the Colab cell does (keeping Colab's versions)"
	@$(COLAB_VENV)/bin/python -m pip install ".[real]" > $(COLAB_VENV)/package.log 2>&1 \
		|| { tail -n 40 $(COLAB_VENV)/package.log; exit 1; }
	$(COLAB_VENV)/bin/python scripts/check_pins.py $(COLAB_PINS)
	$(call pytest_stage,notebooks (smoke profile; Colab's versions),-q -p no:cacheprovider -m notebooks -n $(NB_WORKERS) tests/test_notebooks.py,$(COLAB_VENV)/bin/python)

test-site: install
	$(call pytest_stage,built site (browser),-q -m book)

student: install
	$(BIN)/python scripts/make_student_notebooks.py --out _build/student

# The site without solutions, beside the full one: built from the notebooks the full build executed
# (_build/jupyter_execute/book; `make book` first if they are missing), solutions taken out by
# scripts/make_student_notebooks.py, nothing re-executed -> _build/student_site/_build/html
STUDENT_SRC  := _build/student_src
STUDENT_SITE := _build/student_site
book-student: install widgets
	@test -f _build/jupyter_execute/book/01_cnn_is_sem.ipynb || $(MAKE) --no-print-directory book
	$(BIN)/python scripts/make_student_site.py --out $(STUDENT_SRC)
	$(BIN)/jupyter-book build $(STUDENT_SRC) -W -n --keep-going --path-output $(STUDENT_SITE)
	@echo "==> student site: $(CURDIR)/$(STUDENT_SITE)/_build/html/index.html"

# the browser test of the student site (no solution visible on any page)
test-student-site: install
	$(call pytest_stage,student site (browser),-q -m student_site tests/test_student_site.py)

clean:
	rm -rf _build

clean-cache:
	rm -rf _build/.jupyter_cache _build/.kmex_package_key
