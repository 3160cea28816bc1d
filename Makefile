# One command each for the local loop. CI (.ci/run) runs `lint` and the README's test command.
.PHONY: lint test quick bench

lint:
	ruff check python tests benches
	ruff format --check python tests benches
	mypy
	python3 -m mypy.stubtest pumpwatch._core
	cargo fmt --check
	cargo clippy -q -p pumpwatch-core -p pumpwatch-py --all-targets -- -D warnings
	cargo clippy -q -p pumpwatch-core --features failpoints --all-targets -- -D warnings

# Every test, as CI runs them (on pytest-xdist workers: pyproject's addopts; `-n 0` for one process).
test:
	cargo test -p pumpwatch-core
	cargo test -p pumpwatch-core --features failpoints --test failpoints
	python3 -m pytest -q

# The quick loop: everything not marked slow (tests/conftest.py), on the same workers.
quick:
	python3 -m pytest -q -m "not slow"

bench:
	python3 -m pytest benches --benchmark-only --benchmark-columns=mean,min,max,rounds
