# linegate: build, run, test and measure the nginx module.
#
#   make            build build/ngx_http_linegate_module.so against the
#                   packaged nginx (nginx-dev), or NGINX_SRC=<nginx tree>
#   make deps       install the Debian packages (as root; idempotent, quiet
#                   when all are there); run, test and the build call it
#   make run        development stack in the foreground (127.0.0.1:8080)
#   make test       build, then prove -r t/
#   make bench      wrk against linegate, nginx static and the peers

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
    libyaml-libyaml-perl libredis-perl build-essential clang

.PHONY: all deps run test unit asan bench clean distclean

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

test: $(MODULE)
	prove $(PROVE_ARGS) t/

unit:
	prove t/001-unit.t

# the suite against an AddressSanitizer build of the module, loaded into
# the packaged nginx with clang's runtime preloaded (into nginx only).
# Globals are not instrumented: the module's generated ngx_modules[]
# interposes nginx's own, which ASan would then report on every reload.
ASAN_RT = $(shell clang -print-file-name=libclang_rt.asan-x86_64.so)
asan:
	$(MAKE) CC=clang BUILD=$(CURDIR)/build-asan \
	    EXTRA_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -O1 \
	        -mllvm -asan-globals=0" \
	    EXTRA_LDFLAGS="-fsanitize=address -Wl,-rpath,$(dir $(ASAN_RT))"
	printf '#!/bin/sh\nLD_PRELOAD=%s ASAN_OPTIONS=%s exec /usr/sbin/nginx "$$@"\n' \
	    $(ASAN_RT) detect_leaks=0:log_path=$(CURDIR)/build-asan/logs/asan \
	    > build-asan/nginx && chmod +x build-asan/nginx
	rm -rf build-asan/logs && mkdir -m 1777 build-asan/logs
	LG_NGINX=$(CURDIR)/build-asan/nginx \
	    LG_MODULE=$(CURDIR)/build-asan/ngx_http_linegate_module.so \
	    prove $(PROVE_ARGS) t/
	@if ls build-asan/logs/asan.* >/dev/null 2>&1; then \
	    cat build-asan/logs/asan.*; echo "asan: reports above"; exit 1; \
	else echo "asan: no reports"; fi

bench: $(MODULE)
	bash bench/run.sh

clean:
	rm -rf $(BUILD)

SHELL = /bin/bash
