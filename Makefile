# kmexplain: two commands do everything (see README.md)
#   make book   set up .venv and build the book strictly   -> _build/html/index.html
#   make test   set up .venv and run all the tests (unit and the package's docstring
#               examples, every chapter in the smoke profile, the strict quick-profile
#               book build, the browser test)
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
# every docstring example of the package runs as a doctest in the unit stage
DOCTESTS    := -q --doctest-modules kmexplain_utils

export KMEX_PROGRESS := 0
export PYTHONDONTWRITEBYTECODE := 1

# run pytest for one stage (tests use the smoke profile whatever KMEX_PROFILE says);
# exit code 5 ("no tests collected") is an error with a clear message
define pytest_stage
	@echo "==> tests: $(1)"
	@KMEX_PROFILE=smoke $(BIN)/python -m pytest $(2); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: stage '$(1)' collected no tests (pytest exit code 5): the suite is incomplete."; fi; \
	exit $$rc
endef

.PHONY: install book widgets test test-unit test-notebooks test-site clean clean-cache student

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[book,test,bench]"
	@touch $(STAMP)

widgets:
	@bash scripts/fetch_widget_js.sh

book: install widgets
	KMEX_PROFILE=$(BOOK_PROFILE) KMEX_BOOK_EXECUTE=$(BOOK_EXECUTE) \
		$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "==> book: $(CURDIR)/_build/html/index.html"

test: install widgets
	$(call pytest_stage,unit,-q -m "not notebooks and not book")
	$(call pytest_stage,unit (docstring examples),$(DOCTESTS))
	$(call pytest_stage,notebooks (smoke profile),-q -m notebooks -n $(NB_WORKERS))
	$(MAKE) --no-print-directory book BOOK_PROFILE=quick
	$(call pytest_stage,built site (browser),-q -m book)

test-unit: install
	$(call pytest_stage,unit,-q -m "not notebooks and not book")
	$(call pytest_stage,unit (docstring examples),$(DOCTESTS))

test-notebooks: install
	$(call pytest_stage,notebooks (smoke profile),-q -m notebooks -n $(NB_WORKERS))

test-site: install
	$(call pytest_stage,built site (browser),-q -m book)

student: install
	$(BIN)/python scripts/make_student_notebooks.py --out _build/student

clean:
	rm -rf _build

clean-cache:
	rm -rf _build/.jupyter_cache _build/.kmex_package_key
