# linegate: build, run, test and measure the nginx module.
#
#   make            build build/ngx_http_linegate_module.so against the
#                   packaged nginx (nginx-dev), or NGINX_SRC=<nginx tree>
#   make deps       install the Debian packages (as root; idempotent)
#   make run        development stack in the foreground (127.0.0.1:8080)
#   make test       build, then prove -r t/
#   make bench      wrk against linegate, nginx static and the peers
#   make bench-limit  linegate_limit beside limit_req (bench/limit.pl)
#   make fuzz       libFuzzer targets (t/fuzz/), FUZZ_SECONDS each
#   make fuzz-smoke the same, 10 s each (CI)
#   make sanitize   the suite against an ASan + UBSan build of the module
#   make deb        the Debian package libnginx-mod-http-linegate, built
#                   with dh_nginx in $(BUILD)/deb/ (docs/deploy.md)

NGINX_SRC  ?= /usr/share/nginx/src
BUILD      ?= $(CURDIR)/build
CC         ?= cc
EXTRA_CFLAGS  ?=
EXTRA_LDFLAGS ?=
PROVE_ARGS ?= -r
MODULE      = $(BUILD)/ngx_http_linegate_module.so

SRCS = $(wildcard src/*.c src/*.h src/lua/*.lua src/lua/include/*.lua)

DEB_PACKAGES = nginx nginx-dev libhiredis-dev libjansson-dev libssl-dev \
    redis-server redis-tools wrk curl jq perl openssl procps gnuplot-nox \
    libmojolicious-perl libcrypt-jwt-perl libjson-validator-perl \
    libyaml-libyaml-perl libredis-perl build-essential clang prometheus \
    libclang-rt-14-dev debhelper dpkg-dev libio-socket-ssl-perl

.PHONY: all deps run test unit asan sanitize fuzz fuzz-build fuzz-smoke \
    bench bench-limit deb clean distclean

all: $(MODULE)

$(BUILD)/Makefile: config
	@mkdir -p $(BUILD)
	cd $(NGINX_SRC) && \
	if [ -f ./conf_flags ]; then . ./conf_flags; else NGX_CONF_FLAGS=(); fi; \
	./configure --with-cc=$(CC) \
	    --with-cc-opt="$$(dpkg-buildflags --get CFLAGS) -fPIC \
	        $$(dpkg-buildflags --get CPPFLAGS) $(EXTRA_CFLAGS)" \
	    --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS) -fPIC \
	        $(EXTRA_LDFLAGS)" \
	    "$${NGX_CONF_FLAGS[@]}" --with-compat \
	    --add-dynamic-module=$(CURDIR) --builddir=$(BUILD) \
	    > $(BUILD)/configure.log 2>&1 || \
	    { tail -20 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(BUILD)/Makefile $(SRCS)
	perl src/lua/embed.pl $(BUILD)/linegate_gen/ngx_http_linegate_lua.h \
	    src/lua/*.lua
	$(MAKE) -s -f $(BUILD)/Makefile -C $(NGINX_SRC) modules
	@test -f $(MODULE)

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
	        grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: all present"; fi

run: $(MODULE)
	perl t/lib/run-dev.pl

test: $(MODULE)
	prove $(PROVE_ARGS) t/

unit:
	prove t/001-unit.t

# the suite against an AddressSanitizer build of the module, loaded into
# the packaged nginx with clang's runtime preloaded (into nginx only).
# Globals are not instrumented: the module's generated ngx_modules[]
# interposes nginx's own, which ASan would then report on every reload.
# `make sanitize` is the same with UndefinedBehaviorSanitizer too (its
# handlers are in the same runtime): any report aborts the worker, is
# logged beside ASan's, and fails the target.
ASAN_RT = $(shell clang -print-file-name=libclang_rt.asan-x86_64.so)
SAN_DIR   ?= build-asan
SAN_FLAGS ?= -fsanitize=address
asan:
	$(MAKE) CC=clang BUILD=$(CURDIR)/$(SAN_DIR) \
	    EXTRA_CFLAGS="$(SAN_FLAGS) -fno-omit-frame-pointer -O1 \
	        -mllvm -asan-globals=0" \
	    EXTRA_LDFLAGS="$(SAN_FLAGS) -Wl,-rpath,$(dir $(ASAN_RT))"
	printf '#!/bin/sh\nLD_PRELOAD=%s ASAN_OPTIONS=%s UBSAN_OPTIONS=%s exec /usr/sbin/nginx "$$@"\n' \
	    $(ASAN_RT) detect_leaks=0:log_path=$(CURDIR)/$(SAN_DIR)/logs/asan \
	    print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/$(SAN_DIR)/logs/ubsan \
	    > $(SAN_DIR)/nginx && chmod +x $(SAN_DIR)/nginx
	rm -rf $(SAN_DIR)/logs && mkdir -m 1777 $(SAN_DIR)/logs
	LG_NGINX=$(CURDIR)/$(SAN_DIR)/nginx \
	    LG_MODULE=$(CURDIR)/$(SAN_DIR)/ngx_http_linegate_module.so \
	    prove $(PROVE_ARGS) t/; rc=$$?; \
	if ls $(SAN_DIR)/logs/* >/dev/null 2>&1; then \
	    cat $(SAN_DIR)/logs/*; echo "$(SAN_DIR): sanitizer reports above"; \
	    exit 1; \
	fi; \
	echo "$(SAN_DIR): no sanitizer reports"; exit $$rc

sanitize:
	$(MAKE) asan SAN_DIR=build-sanitize \
	    SAN_FLAGS="-fsanitize=address,undefined \
	        -fno-sanitize-recover=undefined"

# libFuzzer + ASan + UBSan targets for the parsers of untrusted input
# (t/fuzz/README.md); FUZZ_TARGETS narrows, FUZZ_RUNS caps executions.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_NICE    ?= nice -n 19
fuzz-build: $(BUILD)/Makefile
	bash t/fuzz/build.sh $(BUILD) $(BUILD)/fuzz $(FUZZ_TARGETS)

fuzz: fuzz-build
	$(FUZZ_NICE) bash t/fuzz/run.sh $(BUILD)/fuzz $(FUZZ_SECONDS) \
	    $(FUZZ_TARGETS)

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=10

bench: $(MODULE)
	bash bench/run.sh

# linegate_limit beside limit_req in one nginx (docs/gateway.md)
bench-limit: $(MODULE)
	perl bench/limit.pl

# The package's version is the top entry of debian/changelog (the last
# release); a build from a git checkout whose HEAD is not tagged
# v<that version> gets +git<commit time, UTC>.<commit> appended, so every
# later commit is a higher version (apt upgrades across a fleet).
# DEB_VERSION=... overrides. The tree is copied to $(BUILD)/deb/src and
# built there with dpkg-buildpackage -b: nothing is written into the tree.
DEB_DIR      = $(BUILD)/deb
DEB_BASE     = $(shell dpkg-parsechangelog -l debian/changelog -S Version)
DEB_SNAPSHOT = $(shell git rev-parse --git-dir >/dev/null 2>&1 && \
    ! git describe --exact-match --tags --match 'v$(DEB_BASE)' \
        >/dev/null 2>&1 && \
    TZ=UTC git log -1 --format='+git%cd.%h' \
        --date=format-local:%Y%m%d%H%M%S)
DEB_VERSION ?= $(DEB_BASE)$(DEB_SNAPSHOT)
DEB_ARCH     = $(shell dpkg --print-architecture)
DEB          = $(DEB_DIR)/libnginx-mod-http-linegate_$(DEB_VERSION)_$(DEB_ARCH).deb

deb:
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	cp -a config Makefile README.md src conf docs debian $(DEB_DIR)/src/
	if [ "$(DEB_VERSION)" != "$(DEB_BASE)" ]; then \
	    { printf 'linegate (%s) unstable; urgency=medium\n\n' \
	          '$(DEB_VERSION)'; \
	      printf '  * Built from %s.\n\n' \
	          "$$(git describe --always --dirty 2>/dev/null || echo a tree)"; \
	      printf ' -- %s  %s\n\n' \
	          "$$(dpkg-parsechangelog -l debian/changelog -S Maintainer)" \
	          "$$(date -R)"; \
	      cat debian/changelog; } > $(DEB_DIR)/src/debian/changelog; \
	fi
	cd $(DEB_DIR)/src && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
	    dpkg-buildpackage -b -us -uc > $(DEB_DIR)/build.log 2>&1 || \
	    { tail -30 $(DEB_DIR)/build.log; exit 1; }
	@test -f $(DEB) && echo "$(DEB)"

clean:
	rm -rf $(BUILD)

SHELL = /bin/bash
