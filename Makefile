# sluice: one Makefile. `make` builds build/sluice; see README.md.

VERSION    := 0.1.0
BUILD      := build
PKGS       := rdkafka hiredis libpq libevent msgpack yaml-0.1 jansson libseccomp sqlite3 libcrypto libsystemd
TEST_PKGS  := criterion

CC         ?= cc
CSTD       := -std=c11 -D_GNU_SOURCE
WARN       := -Wall -Wextra -Wshadow -Wformat=2 -Werror
OPT        ?= -O2 -g
ifeq ($(SANITIZE),1)
OPT        := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN      := -fsanitize=address,undefined
endif

PKG_CFLAGS  = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
TEST_CFLAGS = $(shell pkg-config --cflags $(TEST_PKGS) 2>/dev/null)
TEST_LIBS   = $(shell pkg-config --libs $(TEST_PKGS) 2>/dev/null)

CFLAGS_ALL  = $(CSTD) $(WARN) $(OPT) -Iinclude -MMD -MP -DSL_VERSION='"$(VERSION)"' $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(LDSAN) $(LDFLAGS)
LIBS_ALL    = $(PKG_LIBS) -lpthread -lm

# The library holds every part but the command line, which is only the binary.
LIB_SRCS   := $(wildcard core/*.c config/*.c sandbox/*.c sinks/*.c dispatcher/*.c pollers/*.c pollers/*/*.c api/*.c) \
              sandbox/init/lo.c
LIB_OBJS   := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
# The web console's static files, embedded (console/embed.sh, api/assets.h).
CONSOLE_ASSETS := $(sort $(wildcard console/*.html console/*.js console/*.css)) \
                  $(sort $(wildcard console/vendor/uplot/*))
LIB_OBJS   += $(BUILD)/obj/gen/console_assets.o
CLI_OBJS   := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard cli/*.c))
UNIT_SRCS  := $(wildcard tests/unit/*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/unit/%)
INTEG_SRCS := $(wildcard tests/integration/*.c)
INTEG_BINS := $(INTEG_SRCS:tests/integration/%.c=$(BUILD)/tests/integration/%)
# Shared test code: tests/lib/harness.h. The test doubles live in the
# parts they double and in libsluice.a: the capture sink in sinks/capture.c
# (sluice/capture_sink.h), the fake functions in sandbox/fake.c
# (sluice/fake_functions.h).
TEST_INC    := -Itests/lib
HANDLER_SRCS := $(wildcard examples/handlers/*.c)
HANDLER_BINS := $(HANDLER_SRCS:examples/handlers/%.c=$(BUILD)/handlers/%)
# C handlers of the integration tests (JSON through jansson)
TEST_HANDLER_SRCS := $(wildcard tests/handlers/*.c)
TEST_HANDLER_BINS := $(TEST_HANDLER_SRCS:tests/handlers/%.c=$(BUILD)/test-handlers/%)
# sluice-init: each environment's init, a program of its own (sandbox/init/),
# static and without sanitizers (it runs before and after pivot_root, as
# pid 1, under seccomp); sluice finds it beside itself.
INIT_SRCS  := $(wildcard sandbox/init/*.c)
INIT_CFLAGS := $(CSTD) $(WARN) -O2 -g -static
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

# Installation (`make install`, `make uninstall`, `make deb`): the binary, the
# environments' init, the handler runtimes (found at run time as
# ../lib/sluice/runtime from the binary), the man page, the systemd unit and
# an example configuration. DESTDIR is honoured.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
LIBEXECDIR ?= $(PREFIX)/libexec
SHAREDIR   ?= $(PREFIX)/share/sluice
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/sluice
UNITDIR    ?= $(LIBDIR)/systemd/system
RUNTIME_FILES := $(wildcard runtime/python/*.py runtime/nodejs/*.mjs runtime/c/*.[ch])
INSTALLED  := $(BINDIR)/sluice $(LIBEXECDIR)/sluice/sluice-init \
              $(RUNTIME_FILES:runtime/%=$(LIBDIR)/sluice/runtime/%) \
              $(MANDIR)/man1/sluice.1 $(UNITDIR)/sluice.service \
              $(SHAREDIR)/examples/hello/app.py $(DOCDIR)/sluice.yaml.example \
              $(DOCDIR)/README.md $(DOCDIR)/CONFIGURATION.md $(DOCDIR)/SECURITY.md

.PHONY: all deps test unit run bench docs clean check-docs fuzz install uninstall deb
.DEFAULT_GOAL := all

all: $(BUILD)/sluice $(BUILD)/sluice-init $(HANDLER_BINS) $(TEST_HANDLER_BINS)

# Rebuild everything when the flags change (SANITIZE=1 and back).
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CFLAGS_ALL) $(LDFLAGS_ALL)' | cmp -s - $@ || echo '$(CFLAGS_ALL) $(LDFLAGS_ALL)' > $@
FORCE:

$(BUILD)/obj/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/gen/console_assets.c: console/embed.sh $(CONSOLE_ASSETS)
	@mkdir -p $(dir $@)
	console/embed.sh $(CONSOLE_ASSETS) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/console_assets.o: $(BUILD)/gen/console_assets.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iapi -c $< -o $@

$(BUILD)/libsluice.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/sluice: $(CLI_OBJS) $(BUILD)/libsluice.a | $(BUILD)/sluice-init
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(BUILD)/sluice-init: $(INIT_SRCS) sandbox/init/init.h
	@mkdir -p $(dir $@)
	$(CC) $(INIT_CFLAGS) -o $@ $(INIT_SRCS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libsluice.a $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iconfig $(TEST_INC) $(TEST_CFLAGS) -MF $@.d -o $@ $< $(BUILD)/libsluice.a $(LDFLAGS_ALL) $(TEST_LIBS) $(LIBS_ALL)

$(BUILD)/tests/integration/%: tests/integration/%.c $(BUILD)/libsluice.a $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TEST_INC) $(TEST_CFLAGS) -MF $@.d -o $@ $< $(BUILD)/libsluice.a $(LDFLAGS_ALL) $(TEST_LIBS) $(LIBS_ALL)

# C handlers: the example handlers linked with the C runtime library
$(BUILD)/obj/runtime/c/sluice_runtime.o: runtime/c/sluice_runtime.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/handlers/%: examples/handlers/%.c $(BUILD)/obj/runtime/c/sluice_runtime.o $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iruntime/c -MF $@.d -o $@ $< $(BUILD)/obj/runtime/c/sluice_runtime.o $(LDFLAGS_ALL) -lmsgpackc

$(BUILD)/test-handlers/%: tests/handlers/%.c $(BUILD)/obj/runtime/c/sluice_runtime.o $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iruntime/c -MF $@.d -o $@ $< $(BUILD)/obj/runtime/c/sluice_runtime.o $(LDFLAGS_ALL) -lmsgpackc -ljansson

$(BUILD)/bench/%: bench/%.c $(BUILD)/libsluice.a $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MF $@.d -o $@ $< $(BUILD)/libsluice.a $(LDFLAGS_ALL) $(LIBS_ALL)

# Fuzzing: libFuzzer targets in fuzz/, built with clang into build/fuzz
# (the library itself instrumented too); `make fuzz` runs each for
# FUZZ_SECONDS from its seed corpus. Crashes land in build/fuzz/.
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(filter-out fuzz/replay.c,$(wildcard fuzz/*.c)))
FUZZ_SECONDS ?= 30

fuzz:
	@command -v clang >/dev/null || (echo "fuzz: installing clang"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null)
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/fuzz CC=clang SANITIZE=1 \
		CFLAGS="-fsanitize=fuzzer-no-link -Wno-unknown-warning-option -Wno-format-nonliteral" $(BUILD)/fuzz/libsluice.a
	@set -e; for t in $(FUZZ_TARGETS); do \
		clang $(CSTD) -g -O1 -Iinclude $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined \
			-o $(BUILD)/fuzz/$$t fuzz/$$t.c $(BUILD)/fuzz/libsluice.a $(LIBS_ALL); \
		echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
		mkdir -p $(BUILD)/fuzz/corpus-$$t; \
		(cd $(BUILD)/fuzz && ./$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
			corpus-$$t ../../fuzz/corpus/$$t 2>&1 | tail -3); \
	done

# The same targets replayed over their seed corpus without libFuzzer.
$(BUILD)/fuzz-replay/%: fuzz/%.c fuzz/replay.c $(BUILD)/libsluice.a $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MF $@.d -o $@ $< fuzz/replay.c $(BUILD)/libsluice.a $(LDFLAGS_ALL) $(LIBS_ALL)

# Debian packages for the build, the tests and the demo; quiet when present.
deps:
	@tests/deps

# tests/run tests the build it is given: `make SANITIZE=1 BUILD=build-asan test`
# runs the sanitizer build's binaries, handlers and sluice.
test: deps
	@tests/layers.sh
	@$(MAKE) --no-print-directory all $(UNIT_BINS) $(INTEG_BINS)
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) tests/run

unit: all $(UNIT_BINS)
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) tests/run --unit

run: deps all
	@examples/demo

bench: deps all
	@bench/run all

docs: all
	$(BUILD)/sluice config-docs > docs/CONFIGURATION.md

check-docs: all
	@$(BUILD)/sluice config-docs | diff -u docs/CONFIGURATION.md - && echo "docs/CONFIGURATION.md is current"

# The example configuration and the unit name installed paths: /usr/bin and
# /usr/share/sluice in deploy/, rewritten for PREFIX.
install: $(BUILD)/sluice $(BUILD)/sluice-init
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)/sluice $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SHAREDIR)/examples/hello $(DESTDIR)$(DOCDIR) \
		$(addprefix $(DESTDIR)$(LIBDIR)/sluice/runtime/,python nodejs c)
	install -m 0755 $(BUILD)/sluice $(DESTDIR)$(BINDIR)/sluice
	install -m 0755 $(BUILD)/sluice-init $(DESTDIR)$(LIBEXECDIR)/sluice/sluice-init
	@set -e; for f in $(RUNTIME_FILES); do \
		echo "install -m 0644 $$f $(DESTDIR)$(LIBDIR)/sluice/$$f"; \
		install -m 0644 $$f $(DESTDIR)$(LIBDIR)/sluice/$$f; done
	install -m 0644 docs/sluice.1 $(DESTDIR)$(MANDIR)/man1/sluice.1
	sed -e 's#/usr/bin/sluice#$(BINDIR)/sluice#g' deploy/sluice.service \
		> $(DESTDIR)$(UNITDIR)/sluice.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/sluice.service
	install -m 0644 examples/lambda/app.py $(DESTDIR)$(SHAREDIR)/examples/hello/app.py
	sed -e 's#/usr/share/sluice#$(SHAREDIR)#g' deploy/sluice.yaml > $(DESTDIR)$(DOCDIR)/sluice.yaml.example
	chmod 0644 $(DESTDIR)$(DOCDIR)/sluice.yaml.example
	install -m 0644 README.md docs/CONFIGURATION.md docs/SECURITY.md $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(addprefix $(DESTDIR),$(addprefix $(LIBDIR)/sluice/runtime/,python nodejs c) \
		$(LIBDIR)/sluice/runtime $(LIBDIR)/sluice $(LIBEXECDIR)/sluice \
		$(SHAREDIR)/examples/hello $(SHAREDIR)/examples $(SHAREDIR) $(DOCDIR)) 2>/dev/null

# A Debian package of this build: $(BUILD)/sluice_$(VERSION)_<arch>.deb
# (deploy/debian/: maintainer scripts; deploy/mkdeb: staging and control).
deb: $(BUILD)/sluice $(BUILD)/sluice-init
	@SANITIZE=$(SANITIZE) deploy/mkdeb $(BUILD) $(VERSION)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
