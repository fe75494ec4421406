# mailjournal: the two commands a new user needs, and a few more.
#   make run    start the gateway on 127.0.0.1:2525 with deploy/mailjournal.toml
#   make test   install what the tests need, then run the whole suite

CARGO ?= cargo

.PHONY: run test test-deps build release lint bench clean

run:
	mkdir -p var
	$(CARGO) run --release -- serve --config deploy/mailjournal.toml

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# The suite needs python3 (an independent MIME parser checks journal reports).
test-deps:
	@command -v python3 >/dev/null || (apt-get update -qq && apt-get install -y -qq python3)

test: test-deps
	$(CARGO) build --all-targets
	$(CARGO) test --workspace -- --test-threads=4

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: release
	bash bench/run.sh

clean:
	$(CARGO) clean
	rm -rf var
