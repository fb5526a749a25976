# The README's commands: 'make run', 'make test' and 'make install'.
# Everything else is meson and ninja underneath.
BUILD ?= build
VMHOST = $(BUILD)/src/cli/vmhost

.PHONY: all deps build run test install clean

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

# vmhost, its guest builder (PREFIX/share/vmhost) and its documents
# (PREFIX/share/doc/vmhost), for this or another machine. PREFIX: meson's
# (/usr/local) unless given, and then kept for the build. DESTDIR: a staging
# root; the staged tree runs from there as well (it finds its files relative
# to its binary). Stripped: nothing in it names this checkout.
install: $(BUILD)/build.ninja
	$(if $(PREFIX),meson configure $(BUILD) --prefix=$(abspath $(PREFIX)))
	ninja -C $(BUILD)
	meson install -C $(BUILD) --no-rebuild --strip $(if $(DESTDIR),--destdir $(abspath $(DESTDIR)))

clean:
	rm -rf build build-ci build-asan build-fuzz
