# Two commands for a newcomer (as root on Debian): `make demo` and `make test`.
VENV := .venv/bin
export PATH := $(CURDIR)/$(VENV):$(PATH)

.PHONY: install demo test test-fast lint bench screenshots packages

install:
	bash scripts/install.sh

demo: install
	bash scripts/demo.sh

lint: install
	$(VENV)/ruff check src tests bench
	$(VENV)/ruff format --check src tests bench

# The whole suite: unit tests and lab tests (lab tests need root; under CI=true a skip fails).
test: install lint
	$(VENV)/python -m pytest -q

# Unit tests only: no root, seconds.
test-fast:
	$(VENV)/python -m pytest -q -m "not lab"

# The benchmark suite (not part of the tests): table on stdout, JSON and plots in bench/results/.
bench:
	EXTRAS=test,bench bash scripts/install.sh
	$(VENV)/python -m bench.run

# The GUI's screenshots in docs/screenshots/, taken by the GUI lab tests (offscreen Qt).
screenshots: install
	GUI_SCREENSHOTS=$(CURDIR)/docs/screenshots $(VENV)/python -m pytest -q tests/gui/test_gui_lab.py

# The dom0 RPM, the template deb and the template RPM in dist/ (Debian 12: needs `rpm`).
packages: install
	$(VENV)/python scripts/build_packages.py --out $(CURDIR)/dist
