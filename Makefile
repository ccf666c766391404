# linegate: build, run, test and measure the nginx module.
#
#   make            build build/ngx_http_linegate_module.so against the
#                   packaged nginx (nginx-dev), or NGINX_SRC=<nginx tree>
#   make deps       install the Debian packages (as root; idempotent, quiet
#                   when all are there); run, test and the build call it
#   make run        development stack in the foreground (127.0.0.1:8080)
#   make test       build, then prove -r t/ (LG_REDIS=sentinel: the Lines
#                   and Provisioning files on Redis Sentinel; LG_REDIS=
#                   cluster: t/037, t/038, the Provisioning and the
#                   linegate_limit files on a Redis Cluster)
#   make chaos      chaos run: workload + faults, then invariants
#                   (CHAOS_SECONDS=180, CHAOS_SEED=, CHAOS_FAULTS=a,b;
#                   docs/chaos.md)
#   make matrix     the module -Werror with gcc and clang against Debian's
#                   nginx and every vendored nginx; nginx from the oldest
#                   and newest vendored source, the suite against each
#   make bench      wrk against linegate, nginx static and the peers,
#                   provision-preview on a Redis Cluster of 3 masters
#                   against one Redis (issue 10), then the bench-limit
#                   part (BENCH_QUICK=1: short runs)
#   make bench-limit  linegate_limit beside the rate-limiting peers
#                   (shared/bench/peers/ratelimit: limit_req, kjdev, Lua),
#                   one run, with issue 12's targets (bench/limit.sh);
#                   also linegate_limit on a Redis Cluster of 3 masters
#                   against one Redis (issue 10's >= 0.9 x)
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

SRCS = $(wildcard src/*.c src/*.h src/lua/*.lua src/lua/include/*.lua) \
    src/lua/embed.pl

DEB_PACKAGES = nginx nginx-dev libhiredis-dev libjansson-dev libssl-dev \
    redis-server redis-tools wrk curl jq perl openssl procps gnuplot-nox \
    libmojolicious-perl libcrypt-jwt-perl libjson-validator-perl \
    libyaml-libyaml-perl libredis-perl build-essential clang prometheus \
    libclang-rt-14-dev debhelper dpkg-dev libio-socket-ssl-perl \
    libpcre2-dev zlib1g-dev valgrind

.PHONY: all deps run test unit chaos asan sanitize fuzz fuzz-build fuzz-smoke \
    bench bench-limit deb clean distclean matrix matrix-summary \
    matrix-newest

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

# One dpkg-query for every package: nothing printed when all are there.
deps:
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Abbrev}\n' \
	    $(DEB_PACKAGES) 2>/dev/null | \
	    awk '$$2 == "ii" { ok[$$1] = 1 } END { \
	        n = split("$(DEB_PACKAGES)", p, " "); \
	        for (i = 1; i <= n; i++) if (!(p[i] in ok)) printf " %s", p[i] }'); \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "missing packages:$$missing (make deps as root)"; exit 1; \
	    fi; \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends $$missing \
	        >/dev/null; \
	fi

# the packages come before anything reads $(NGINX_SRC) or runs the tools
$(BUILD)/Makefile: | deps
run test: | deps

run: $(MODULE)
	perl t/lib/run-dev.pl

# Which files run on which Redis (LG_REDIS):
#   empty, single  the whole suite on one Redis
#   sentinel  the Lines and Provisioning files (and the Sentinel and WAIT
#             files) on a master, 2 replicas and 3 sentinels
#   cluster   the cluster files, the Lines, Provisioning and webhook
#             files and the linegate_limit files on 3 masters and 3
#             replicas. t/401, t/405 and t/406 are left out: they stop
#             (t/401 also pauses) the one Redis (t/037 and t/407 kill a
#             master).
export LG_REDIS
TEST_FILES_single = t/
TEST_FILES_sentinel = $(wildcard t/1[0-9][0-9]-lines-*.t \
    t/2[0-9][0-9]-provision-*.t t/036-redis-sentinel.t t/042-redis-wait.t \
    t/043-redis-sentinel-subscription.t t/048-redis-wait-refused.t \
    t/051-redis-durable-chain-full.t t/053-redis-sentinel-switch-late.t \
    t/054-redis-connect-warm.t)
TEST_FILES_cluster = t/037-redis-cluster.t t/038-redis-cluster-provision.t \
    t/039-redis-cluster-lines.t t/046-redis-cluster-moved-refresh.t \
    t/052-redis-cluster-many-ranges.t t/055-redis-cluster-connect-warm.t \
    t/056-redis-cluster-stalled-node.t t/058-redis-cluster-tryagain.t \
    $(wildcard t/1[0-9][0-9]-lines-*.t t/2[0-9][0-9]-provision-*.t) \
    t/300-webhooks.t \
    $(filter-out t/401-% t/405-% t/406-%,\
        $(wildcard t/4[0-9][0-9]-limit-*.t))
TEST_FILES = $(if $(LG_REDIS),$(sort $(or $(TEST_FILES_$(LG_REDIS)),\
    $(error LG_REDIS=$(LG_REDIS): single, sentinel or cluster))),t/)

test: $(MODULE)
	t/lib/prove-retry $(PROVE_ARGS) $(TEST_FILES)

# the chaos harness (docs/chaos.md): CHAOS_SECONDS (180, at most 300),
# CHAOS_SEED, CHAOS_CLIENTS, CHAOS_FAULTS, CHAOS_SETTLE from the
# environment or the command line
chaos: $(MODULE)
	perl t/chaos/chaos.pl

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
# the scripts embedded again first: a build dir configured before a
# script was added has a header without it
fuzz-build: $(BUILD)/Makefile
	perl src/lua/embed.pl $(BUILD)/linegate_gen/ngx_http_linegate_lua.h \
	    src/lua/*.lua
	bash t/fuzz/build.sh $(BUILD) $(BUILD)/fuzz $(FUZZ_TARGETS)

fuzz: fuzz-build
	$(FUZZ_NICE) bash t/fuzz/run.sh $(BUILD)/fuzz $(FUZZ_SECONDS) \
	    $(FUZZ_TARGETS)

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=10

# make matrix: the module built -Werror with gcc and clang against
# Debian's nginx ($(NGINX_SRC)) and every vendored nginx source, each cell
# in its own build directory (make -j runs them side by side); nginx itself
# built from the oldest and the newest vendored source, and the whole suite
# run against each binary with the module built (gcc) against its tree
# (asked for first: nginx builds and suites overlap the other cells).
# Sources are unpacked under $(MATRIX) only. A failed cell does not stop
# the others: the summary table names it and the target fails.
MATRIX          ?= $(CURDIR)/build-matrix
MATRIX_JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
MATRIX_VERSIONS ?= 1.24.0 1.26.3 1.28.3 1.30.4 1.31.4
MATRIX_CCS      ?= gcc clang
MATRIX_SUITE    ?= $(firstword $(MATRIX_VERSIONS)) \
                   $(lastword $(MATRIX_VERSIONS))
NGINX_VENDOR    ?= $(firstword $(wildcard $(CURDIR)/../shared/vendor/nginx \
                       /work/shared/vendor/nginx) $(CURDIR)/vendor/nginx)
# what the test configurations use beyond the defaults (proxy, rewrite;
# poll: t/041; auth_request: t/409 and gateway.md's example; realip:
# t/410; as in Debian's and nginx.org's packages)
MATRIX_NGINX_FLAGS ?= --with-compat --with-http_ssl_module \
                      --with-http_v2_module --with-threads \
                      --with-poll_module --with-http_auth_request_module \
                      --with-http_realip_module

MATRIX_CELLS = $(foreach v,debian $(MATRIX_VERSIONS),\
                   $(foreach c,$(MATRIX_CCS),$(MATRIX)/$(v)-$(c).result))
MATRIX_NGINX = $(foreach v,$(MATRIX_SUITE),$(MATRIX)/nginx-$(v).result)
MATRIX_RUNS  = $(foreach v,$(MATRIX_SUITE),$(MATRIX)/suite-$(v).result)

matrix: | deps
	@rm -f $(MATRIX)/*.result
	@mkdir -p $(MATRIX)/src
	@start=$$(date +%s); \
	$(MAKE) -s -j$(MATRIX_JOBS) --no-print-directory $(MATRIX_CELLS) \
	    $(MATRIX_NGINX); \
	$(MAKE) -s --no-print-directory $(MATRIX_RUNS); \
	echo "matrix: $$(( $$(date +%s) - start ))s"
	@$(MAKE) -s --no-print-directory matrix-summary

matrix-newest:
	@echo $(lastword $(MATRIX_VERSIONS))

matrix-summary:
	@cd $(MATRIX) && fail=0; \
	printf '%-10s' nginx; \
	for c in $(MATRIX_CCS); do printf ' %-6s' $$c; done; echo; \
	for v in debian $(MATRIX_VERSIONS); do \
	    n=$$v; [ $$v = debian ] && n=$$(sed -n \
	        's/^#define NGINX_VERSION *"\(.*\)"/\1/p' \
	        $(NGINX_SRC)/src/core/nginx.h); \
	    printf '%-10s' $$n; \
	    for c in $(MATRIX_CCS); do \
	        r=$$(cat $$v-$$c.result 2>/dev/null || echo none); \
	        [ "$$r" = ok ] || fail=1; printf ' %-6s' $$r; \
	    done; echo; \
	done; \
	for v in $(MATRIX_SUITE); do \
	    r=$$(cat suite-$$v.result 2>/dev/null || echo none); \
	    case "$$r" in ok*) ;; *) fail=1;; esac; \
	    echo "suite, nginx $$v built from source: $$r"; \
	done; \
	for f in *.result; do case "$$(cat $$f)" in ok*) ;; \
	    *) echo "log: $(MATRIX)/$${f%.result}.log";; esac; done; \
	exit $$fail

# a vendored source, unpacked (fetched from nginx.org when not vendored);
# cells of one version ask for it under a lock
$(MATRIX)/src/nginx-%/configure:
	@t=$(NGINX_VENDOR)/nginx-$*.tar.gz; \
	if [ ! -f $$t ]; then \
	    t=$(MATRIX)/src/nginx-$*.tar.gz; \
	    curl -fsS -o $$t https://nginx.org/download/nginx-$*.tar.gz; \
	fi; \
	tar -xzf $$t -C $(MATRIX)/src && touch $@

matrix_unpack = $(if $(filter debian,$(1)),true,flock $(MATRIX)/src/.lock \
    $(MAKE) -s --no-print-directory $(MATRIX)/src/nginx-$(1)/configure)
matrix_src = $(if $(filter debian,$(1)),$(NGINX_SRC),$(MATRIX)/src/nginx-$(1))

# one cell: the module against one nginx (debian or a version) with one
# compiler ($* is <version>-<compiler>)
$(MATRIX_CELLS): $(MATRIX)/%.result:
	@$(call matrix_unpack,$(firstword $(subst -, ,$*))) \
	    > $(MATRIX)/$*.log 2>&1 && \
	$(MAKE) -s --no-print-directory \
	    NGINX_SRC=$(call matrix_src,$(firstword $(subst -, ,$*))) \
	    BUILD=$(MATRIX)/$* CC=$(lastword $(subst -, ,$*)) \
	    $(MATRIX)/$*/ngx_http_linegate_module.so \
	    >> $(MATRIX)/$*.log 2>&1 && echo ok > $@ || echo fail > $@; \
	echo "matrix: $(subst -, ,$*): $$(cat $@)"

# nginx itself, from a vendored source
$(MATRIX_NGINX): $(MATRIX)/nginx-%.result:
	@b=$(MATRIX)/nginx-$*; mkdir -p $$b; \
	{ $(call matrix_unpack,$*) && cd $(MATRIX)/src/nginx-$* && \
	  ./configure --with-cc=gcc --builddir=$$b $(MATRIX_NGINX_FLAGS) && \
	  $(MAKE) -s -f $$b/Makefile -C $(MATRIX)/src/nginx-$* binary && \
	  test -x $$b/nginx; \
	} > $$b.log 2>&1 && echo ok > $@ || echo fail > $@; \
	echo "matrix: nginx $* binary: $$(cat $@)"

# the whole suite against that nginx and the module built (gcc) against
# its tree; one suite at a time (the builds go on meanwhile)
$(MATRIX_RUNS): $(MATRIX)/suite-%.result: $(MATRIX)/%-gcc.result \
        $(MATRIX)/nginx-%.result
	@if [ "$$(cat $(MATRIX)/nginx-$*.result)" != ok ]; then \
	    echo "fail (nginx build)" > $@; \
	elif [ "$$(cat $(MATRIX)/$*-gcc.result)" != ok ]; then \
	    echo "fail (module build)" > $@; \
	elif LG_NGINX=$(MATRIX)/nginx-$*/nginx \
	    LG_MODULE=$(MATRIX)/$*-gcc/ngx_http_linegate_module.so \
	    flock $(MATRIX)/suite.lock t/lib/prove-retry $(PROVE_ARGS) t/ \
	    > $(MATRIX)/suite-$*.log 2>&1; then \
	    echo "ok ($$(grep -o 'Files=[0-9]*, Tests=[0-9]*' \
	        $(MATRIX)/suite-$*.log | head -1))" > $@; \
	else \
	    echo "fail ($$(grep -c '^t/.*Wstat' $(MATRIX)/suite-$*.log)" \
	        "files failed)" > $@; \
	fi; \
	echo "matrix: suite on nginx $*: $$(cat $@)"

# two parts, one after the other on the same box: the APIs against their
# peers (docs/performance.md), then linegate_limit against the
# rate-limiting peers (docs/gateway.md)
bench: $(MODULE)
	bash bench/run.sh
	LG_BENCH_NO_BUILD=1 bash bench/limit.sh

# linegate_limit beside limit_req, kjdev and the Lua GCRA, in one run of
# the peers' run.sh bench (docs/gateway.md)
bench-limit: $(MODULE)
	LG_BENCH_NO_BUILD=1 bash bench/limit.sh

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
