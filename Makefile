# The README's two commands: 'make run' and 'make test'. Everything else is
# meson and ninja underneath.
BUILD ?= build
VMHOST = $(BUILD)/src/cli/vmhost

.PHONY: all deps build run test clean

all: build

deps:
	tools/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Starts Open vSwitch if it is installed but stopped (no systemd: nothing
# else does), builds the guest, boots the 'demo' VM on an overlay of it and
# waits until the guest says it is ready.
run: build
	tools/start-services
	VMHOST=$(VMHOST) tools/demo

# Everything CI runs: -Werror build, unit tests, the same under
# AddressSanitizer and UBSan, fuzz smoke runs, end-to-end tests.
test: deps
	tools/run-tests

clean:
	rm -rf build build-ci build-asan build-fuzz
