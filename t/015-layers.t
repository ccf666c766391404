# The module's files in layers (docs/architecture.md): every src/*.c and
# src/*.h belongs to one layer of the table below, and
#
#  (a) includes: a file includes only headers of its own layer or lower
#      ones, and no header includes itself through others;
#  (b) calls, read from the built objects (build/addon/src/*.o, made by
#      `make` before `make test` runs this; LG_BUILD or LG_MODULE's
#      directory name another build) with nm: no object uses a
#      symbol defined by an object of a higher layer, no two files of one
#      layer use each other through a cycle, and only the reply layer
#      sends or finalizes (ngx_http_send_header, ngx_http_output_filter,
#      ngx_http_finalize_request).
#
# Each violation prints as "file -> file: symbol". The known ones are on
# an allow-list, each entry naming the step of issue 9 that removes it;
# any other violation fails, and so does an entry that no longer occurs:
# the list only shrinks. No nginx, no Redis: runs in a second.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;

my $root = $LG::Stack::ROOT;

# the objects of the module under test: LG_BUILD, or the build directory
# of LG_MODULE (make asan, make matrix), or build/
my $build = $ENV{LG_BUILD}
            // ($ENV{LG_MODULE} && $ENV{LG_MODULE} =~ m{^(.*)/[^/]+$}
                ? $1 : "$root/build");
my $objs = "$build/addon/src";
plan skip_all => "$objs: no objects (a module built elsewhere)"
    if !-d $objs && ($ENV{LG_MODULE} || $ENV{LG_BUILD});

# top to bottom: a layer uses only its own and the ones below it
my @layers = qw(module endpoints reply services infrastructure declarations);
my %rank;
@rank{@layers} = reverse 0 .. $#layers;

my %layer_of = (
    # nginx glue: directives, configuration, the phase handler, the table
    # of APIs that dispatches to the endpoints, process init and exit
    'module.c'             => 'module',

    # one file per endpoint or small family
    'operator.h'           => 'endpoints',    # the operator API
    'operator.c'           => 'endpoints',
    'operator_ops.c'       => 'endpoints',
    'operator_tenants.c'   => 'endpoints',
    'operator_fields.c'    => 'endpoints',
    'lines.h'              => 'endpoints',    # Lines API
    'lines.c'              => 'endpoints',
    'lines_request.c'      => 'endpoints',
    'line_create.c'        => 'endpoints',
    'line_manage.c'        => 'endpoints',
    'provision.h'          => 'endpoints',    # Provisioning API
    'provision.c'          => 'endpoints',
    'provision_plain.c'    => 'endpoints',
    'provision_script.c'   => 'endpoints',
    'provision_confirm.c'  => 'endpoints',
    'webhook.c'            => 'endpoints',
    'reconcile.h'          => 'endpoints',
    'reconcile.c'          => 'endpoints',
    'reconcile_auto.c'     => 'endpoints',
    'limit.h'              => 'endpoints',    # linegate_limit (gateway)
    'limit.c'              => 'endpoints',

    # answers in each API's format: the only layer that finalizes
    'reply.h'              => 'reply',
    'reply.c'              => 'reply',

    # authentication, idempotency, rate windows: return a status, never
    # answer
    'auth.h'               => 'services',
    'auth.c'               => 'services',
    'idempotency.h'        => 'services',
    'idempotency.c'        => 'services',
    'pv_settle.h'          => 'services',     # a Provisioning claim's
    'pv_settle.c'          => 'services',     # settle (confirm, sweep)
    'lr_setup.h'           => 'services',     # the set-up relay on a
    'lr_setup.c'           => 'services',     # cluster (lines, sweep)
    'ratelimit.h'          => 'services',
    'ratelimit.c'          => 'services',
    'lease.h'              => 'services',     # GCRA leases (limit,
    'lease.c'              => 'services',     # workspace rate)
    'lines_cache.h'        => 'services',     # by-user answers kept
    'lines_cache.c'        => 'services',     # (client tracking)

    # Redis, key names, scripts, Stripe subrequests, JSON, crypto, JWT, clock and
    # ids, $request_id, the metrics counters, the directives' shared checks
    'redis.h'              => 'infrastructure',
    'redis.c'              => 'infrastructure',
    'redis_event.h'        => 'infrastructure',
    'redis_event.c'        => 'infrastructure',
    'redis_sentinel.h'     => 'infrastructure',
    'redis_sentinel.c'     => 'infrastructure',
    'redis_slots.h'        => 'infrastructure',   # Cluster: slots, MOVED
    'redis_slots.c'        => 'infrastructure',
    'redis_arena.h'        => 'infrastructure',   # reply objects, arena
    'redis_arena.c'        => 'infrastructure',
    'redis_error.h'        => 'infrastructure',   # Redis 6's script errors
    'redis_error.c'        => 'infrastructure',
    'redis_hold.h'         => 'infrastructure',   # Cluster: writes held
    'redis_hold.c'         => 'infrastructure',
    'redis_wait.h'         => 'infrastructure',   # WAITs, one in flight
    'redis_wait.c'         => 'infrastructure',
    'redis_pubsub.h'       => 'infrastructure',   # revocations pushed
    'redis_pubsub.c'       => 'infrastructure',
    'scripts.h'            => 'infrastructure',
    'scripts.c'            => 'infrastructure',
    'keys.h'               => 'infrastructure',
    'keys.c'               => 'infrastructure',
    'stripe.h'             => 'infrastructure',
    'stripe.c'             => 'infrastructure',
    'stripe_conf.h'        => 'infrastructure',   # nginx -t: where the
    'stripe_conf.c'        => 'infrastructure',   # Stripe calls go
    'json.h'               => 'infrastructure',
    'json.c'               => 'infrastructure',
    'json_write.h'         => 'infrastructure',
    'json_write.c'         => 'infrastructure',
    'jwt.h'                => 'infrastructure',
    'jwt.c'                => 'infrastructure',
    'crypto.h'             => 'infrastructure',
    'crypto.c'             => 'infrastructure',
    'clock.h'              => 'infrastructure',
    'clock.c'              => 'infrastructure',
    'ids.h'                => 'infrastructure',
    'ids.c'                => 'infrastructure',
    'headers.h'            => 'infrastructure',
    'headers.c'            => 'infrastructure',
    'request_id.h'         => 'infrastructure',
    'request_id.c'         => 'infrastructure',
    'metrics.h'            => 'infrastructure',
    'metrics.c'            => 'infrastructure',
    'cache.h'              => 'infrastructure',   # the credential cache
    'cache.c'              => 'infrastructure',
    'chars.h'              => 'infrastructure',   # classes, E.164
    'chars.c'              => 'infrastructure',
    'str.h'                => 'infrastructure',   # the pool string copy
    'str.c'                => 'infrastructure',
    'conf.h'               => 'infrastructure',   # directives' checks
    'conf.c'               => 'infrastructure',

    # the types every layer shares: configuration, ctx, API ids
    'module.h'             => 'declarations',
);

# nginx's handle on the module's configuration and ctx: every file reads
# them through it (ngx_http_get_module_*conf); declared in module.h, its
# definition must live with the directives in module.c
my %shared = map { $_ => 1 } qw(ngx_http_linegate_module);

# only the reply layer sends an answer
my @send = qw(ngx_http_send_header ngx_http_output_filter
              ngx_http_finalize_request ngx_http_send_special);

# Known violations, each removed by the issue-9 step named beside it.
# Remove an entry with the change that makes it pass: an entry that no
# longer occurs fails the test.
my %allowed = map { $_ => 1 } (
    # none left: the list only shrinks, a new violation is fixed instead
);

sub short { my $f = shift; $f =~ s{.*/}{}; $f =~ s/^ngx_http_linegate_//; $f }

opendir my $dh, "$root/src" or die "src: $!";
my @files = sort grep { /^ngx_http_linegate_\w+\.[ch]$/ } readdir $dh;
closedir $dh;

# the table covers the tree
for my $f (map { short($_) } @files) {
    ok(exists $layer_of{$f}, "$f has a layer")
        or diag "add src/ngx_http_linegate_$f to the table in t/015";
}
for my $f (sort keys %layer_of) {
    ok(-f "$root/src/ngx_http_linegate_$f", "$f in the table exists");
}

my @violations;

# Strongly connected components of a graph (hash of hash), Tarjan's.
sub sccs {
    my ($g) = @_;
    my ($i, %index, %low, %on, @stack, @out) = (0);
    my $visit;
    $visit = sub {
        my ($v) = @_;
        $index{$v} = $low{$v} = $i++;
        push @stack, $v;
        $on{$v} = 1;
        for my $w (sort keys %{ $g->{$v} || {} }) {
            if (!exists $index{$w}) {
                $visit->($w);
                $low{$v} = $low{$w} if $low{$w} < $low{$v};
            } elsif ($on{$w}) {
                $low{$v} = $index{$w} if $index{$w} < $low{$v};
            }
        }
        if ($low{$v} == $index{$v}) {
            my @c;
            my $w;
            do { $w = pop @stack; $on{$w} = 0; push @c, $w } while $w ne $v;
            push @out, \@c if @c > 1;
        }
    };
    for my $v (sort keys %$g) {
        $visit->($v) unless exists $index{$v};
    }
    return @out;
}

# (a) includes
my %inc;
for my $f (@files) {
    my $s = short($f);
    open my $fh, '<', "$root/src/$f" or die "$f: $!";
    while (<$fh>) {
        next unless /^\s*#\s*include\s+"(ngx_http_linegate_\w+\.h)"/;
        my $h = short($1);
        next unless exists $layer_of{$h};    # generated (lua.h)
        $inc{$s}{$h} = 1;
        next unless exists $layer_of{$s};
        if ($rank{ $layer_of{$h} } > $rank{ $layer_of{$s} }) {
            push @violations, "$s -> $h: #include";
        }
    }
    close $fh;
}
for my $c (sccs(\%inc)) {
    my %in = map { $_ => 1 } @$c;
    for my $a (@$c) {
        push @violations, "$a -> $_: #include (cycle)"
            for grep { $in{$_} } sort keys %{ $inc{$a} };
    }
}

# (b) calls
my (%defines, %uses);
for my $f (grep { /\.c$/ } @files) {
    my $s = short($f);
    (my $o = "$objs/$f") =~ s/\.c$/.o/;
    if (!-f $o || -M $o > -M "$root/src/$f") {
        fail("$o is missing or older than src/$f: run make");
        next;
    }
    for (qx{nm -g --defined-only '$o'}) {
        my ($type, $sym) = (split)[1, 2];
        next unless defined $sym;
        $defines{$sym} = $s;
    }
    $uses{$s} = [ map { (split)[-1] } qx{nm -u '$o'} ];
}
ok(scalar keys %uses, 'objects read with nm');

my %calls;    # same-layer file graph, for cycles
my %why;
for my $s (sort keys %uses) {
    next unless exists $layer_of{$s};
    for my $sym (@{ $uses{$s} }) {
        if (grep { $_ eq $sym } @send) {
            push @violations, "$s -> nginx: $sym"
                unless $layer_of{$s} eq 'reply';
            next;
        }
        my $d = $defines{$sym};
        next if !defined $d || $d eq $s || $shared{$sym};
        next unless exists $layer_of{$d};
        my ($rs, $rd) = ($rank{ $layer_of{$s} }, $rank{ $layer_of{$d} });
        if ($rd > $rs) {
            push @violations, "$s -> $d: $sym";
        } elsif ($rd == $rs) {
            $calls{$s}{$d} = 1;
            push @{ $why{"$s $d"} }, $sym;
        }
    }
}
for my $c (sccs(\%calls)) {
    my %in = map { $_ => 1 } @$c;
    for my $a (sort @$c) {
        for my $b (grep { $in{$_} } sort keys %{ $calls{$a} }) {
            push @violations, "$a -> $b: $_ (cycle)"
                for sort @{ $why{"$a $b"} };
        }
    }
}

my %seen;
@violations = grep { !$seen{$_}++ } @violations;
my @new = grep { !$allowed{$_} } @violations;
my @gone = grep { !$seen{$_} } sort keys %allowed;

is(scalar @new, 0, 'no violation outside the allow-list')
    or diag join "\n", 'violations:', @new;
is(scalar @gone, 0, 'every allow-list entry still occurs')
    or diag join "\n", 'fixed: remove from the allow-list:', @gone;
note scalar(@violations) . ' known violations left';
note join "\n", @violations if $ENV{LG_LAYERS_ALL};

done_testing();
