# mailjournal: the two commands a new user needs, and a few more.
#   make run    start the gateway on 127.0.0.1:2525 with deploy/mailjournal.toml
#   make test   install what the tests need, then run the whole suite

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-deps build release lint bench clean

run:
	mkdir -p var
	$(CARGO) run --release -- serve --config deploy/mailjournal.toml

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# The suite needs python3 (an independent MIME parser checks journal reports)
# and OpenLDAP's slapd with its tools (the directory tests start their own).
TEST_PACKAGES = python3 slapd ldap-utils
test-deps:
	@missing=""; \
	command -v python3 >/dev/null || missing="$$missing python3"; \
	{ command -v slapd >/dev/null || [ -x /usr/sbin/slapd ]; } || missing="$$missing slapd"; \
	command -v ldapsearch >/dev/null || missing="$$missing ldap-utils"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(TEST_PACKAGES); \
	fi

test: test-deps
	$(CARGO) build --all-targets
	$(CARGO) test --workspace -- --test-threads=4

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: release test-deps
	bash bench/run.sh
	$(CARGO) bench -p directory --bench lookups

clean:
	$(CARGO) clean
	rm -rf var
