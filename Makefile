# Two commands for a newcomer (as root on Debian): `make demo` and `make test`.
VENV := .venv/bin
export PATH := $(CURDIR)/$(VENV):$(PATH)

.PHONY: install demo test test-fast lint bench screenshots packages test-py313

install:
	bash scripts/install.sh

demo: install
	bash scripts/demo.sh

lint: install
	$(VENV)/ruff check src tests bench scripts
	$(VENV)/ruff format --check src tests bench scripts

# The whole suite: unit tests and lab tests (lab tests need root; under CI=true a skip fails).
test: install lint
	$(VENV)/python -m pytest -q

# The unit tests again on Python 3.13 (Qubes 4.3's dom0, newer templates), in .venv313;
# needs a Python 3.13 (pyenv's, or $$PYTHON313). CI runs it after `make test`.
test-py313:
	bash scripts/test_py313.sh

# Unit tests only: no root, seconds.
test-fast:
	$(VENV)/python -m pytest -q -m "not lab"

# The benchmark suite (not part of the tests): table on stdout, JSON and plots in bench/results/.
bench:
	EXTRAS=test,bench bash scripts/install.sh
	$(VENV)/python -m bench.run

# The GUI's screenshots in docs/screenshots/, taken by the GUI lab tests (offscreen Qt).
screenshots: install
	GUI_SCREENSHOTS=$(CURDIR)/docs/screenshots $(VENV)/python -m pytest -q tests/gui/test_gui_lab.py tests/gui/test_firewall_tab_lab.py

# The dom0 RPM, the template deb and the template RPM in dist/ (Debian 12: needs `rpm`).
packages: install
	$(VENV)/python scripts/build_packages.py --out $(CURDIR)/dist
