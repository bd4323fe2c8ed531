# The two commands a user needs: `make demo` and `make test`. Nothing but Python >= 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The work dir: snapshot, embedded server, demo database (EMRSIM_WORK_DIR, as the CLI reads it).
WORK_DIR := $(or $(EMRSIM_WORK_DIR),.emrsim)
DEMO_DB := $(WORK_DIR)/demo.sqlite
DEMO_MESSAGES ?= 20000
DEV_PORT ?= 3000

.PHONY: install demo test check lint dev clean stop bench

$(STAMP): pyproject.toml
	@echo "Installing emrsim-migrate and its dependencies into $(VENV) (first time: about 2 minutes)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	@test -f $(DEMO_DB) || $(BIN)/emrsim-migrate sample --out $(DEMO_DB) --messages $(DEMO_MESSAGES)
	EMRSIM_SQLITE_PATH=$(DEMO_DB) $(BIN)/emrsim-migrate migrate

lint: install
	$(BIN)/ruff check emrsim_assets emrsim_assets_tests bench
	$(BIN)/ruff format --check emrsim_assets emrsim_assets_tests bench
	$(BIN)/mypy

# Everything, as CI runs it.
test: lint
	$(BIN)/pytest -q

# The fast tier, for a contributor's loop: lint, types and the tests outside the full tier.
check: lint
	$(BIN)/pytest -q -m "not full"

# Sizes and repetitions: make bench BENCH_SIZES="2000000 10000000" BENCH_REPEAT=3
BENCH_SIZES ?= 2000000 10000000
BENCH_REPEAT ?= 3
bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/run.py --sizes $(BENCH_SIZES) --repeat $(BENCH_REPEAT)

dev: install
	$(BIN)/emrsim-migrate dev --port $(DEV_PORT)

stop: install
	$(BIN)/emrsim-migrate stop

clean:
	-$(BIN)/emrsim-migrate stop
	rm -rf $(WORK_DIR)
