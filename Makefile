# certgate build and checks. `make check` is the full test run CI does.

.PHONY: all build check test

all: build

build:
	go build ./...

# Short tests only, without the Debian tools and without -race.
test:
	go test ./...

# Everything CI runs: installs what is missing, gofmt, vet, staticcheck,
# go test -race with the end-to-end suite (Postfix, swaks, python3-dkim).
check:
	bash scripts/check.sh
