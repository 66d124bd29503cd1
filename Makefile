# The two set-up commands of the README: `make run` and `make test`.
.PHONY: install run test test-fast

install:
	bash scripts/install.sh

run: install
	.venv/bin/aspo run --config configs/default.yaml $(ARGS)

test: install
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	.venv/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)
