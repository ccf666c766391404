# linegate_limit with two zones, one of which rejects: the zone that
# admitted gives its admission back in dry run as with enforcement (what a
# dry run leaves is what the limit would leave), and its RateLimit numbers
# are those of the state it is left in; both with Redis and in the local
# fallback. One worker: a refund goes out on the connection before the
# next request's decision. A zone whose command fails (an error reply)
# falls the request back, and the zones that admitted it give their
# admission back too; so does one whose command could not be written
# after another zone's was (a shim preloaded into nginx refuses it).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use File::Temp ();
use LG::Stack;
use LG::Test ();
use LG::Limit qw(redis_now_us rl_key);
use LG::RedisCluster;

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

# quota: 5 a day, all at once (T = 17280 s)
my $http = <<"CONF";
    linegate_limit_zone fast key=\$arg_k rate=1r/h burst=0;
    linegate_limit_zone quota key=\$arg_k rate=5r/d burst=4;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        linegate_limit_on_error local;
        location /enforce/ {
            linegate_limit zone=fast;
            linegate_limit zone=quota;
            try_files /file.txt =404;
        }
        location /dry/ {
            linegate_limit zone=fast;
            linegate_limit zone=quota;
            linegate_limit_dry_run on;
            try_files /file.txt =404;
        }
        location /quota/ {
            linegate_limit zone=quota;
            try_files /file.txt =404;
        }
        location /closed/ {
            linegate_limit zone=fast;
            linegate_limit zone=quota;
            linegate_limit_on_error closed;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, WORKERS => 1, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $ua = $s->ua;

sub get { return $ua->get($s->url($_[0]))->res }

sub st {
    my $res = get($_[0]);
    return $res->code . ' ' . ($res->headers->header('X-Limit') // '');
}

# 6 requests to $loc, then the quota alone must admit 4 more and no 5th
sub quota_left {
    my ($loc, $k, $pass, $reject) = @_;
    my @st = map { st("/$loc/?k=$k") } 1 .. 6;
    is_deeply(\@st, [$pass, ($reject) x 5], "$loc: the fast zone rejects")
        or diag("@st");
    my @q = map { get("/quota/?k=$k")->code } 1 .. 5;
    is_deeply(\@q, [200, 200, 200, 200, 429],
              "$loc: the quota was charged once") or diag("@q");
}

sub refunded_headers {
    my ($k, $pass, $reject) = @_;
    my $res = get("/enforce/?k=$k");
    is($res->code . ' ' . $res->headers->header('X-Limit'), $pass,
       'first passes');
    like($res->headers->header('RateLimit') // '',
         qr/^"fast";r=0;t=3600, "quota";r=4;t=17280$/, 'both charged');
    $res = get("/enforce/?k=$k");
    is($res->code . ' ' . $res->headers->header('X-Limit'), $reject,
       'second rejected by fast');
    like($res->headers->header('RateLimit') // '',
         qr/^"fast";r=0;t=\d+, "quota";r=4;t=1728[0-9]$/,
         'quota as it is left: given back, not charged twice')
        or diag($res->headers->header('RateLimit'));
}

subtest 'Redis: dry run gives back as enforcement does' => sub {
    quota_left('enforce', "e$$", '200 PASSED', '429 REJECTED');
    quota_left('dry', "d$$", '200 PASSED', '200 REJECTED_DRY_RUN');
};

subtest 'Redis: RateLimit after a refund' => sub {
    refunded_headers("h$$", '200 PASSED', '429 REJECTED');
};

# the quota's TAT ahead of Redis's clock, in intervals (T = 17280 s),
# once the refunds sent have landed (1: charged once, given back the rest)
sub quota_ahead {
    my ($k) = @_;
    my $r = $s->redis;
    my $ahead;
    for (1 .. 20) {
        my $tat = $r->get(rl_key('quota', $k)) // 0;
        $ahead = ($tat - redis_now_us($r)) / 17280e6;
        last if $ahead <= 1;
        sleep 0.1;
    }
    return $ahead;
}

# After a SCRIPT FLUSH, a single zone's EVAL puts rl_gcra back, so the
# pipelines of two zones succeed and load nothing: rl_refund is then
# missing, and its NOSCRIPT (a refund is fire and forget) must get the
# EVAL as a request's would, not be dropped with the answer's RateLimit
# saying it was given back.
subtest 'Redis: refunds after a SCRIPT FLUSH' => sub {
    $s->redis->script_flush;
    is(st("/quota/?k=f$$"), '200 PASSED', 'one zone: its EVAL after NOSCRIPT');
    my $k = "fl$$";
    my @st = map { st("/enforce/?k=$k") } 1 .. 6;
    is_deeply(\@st, ['200 PASSED', ('429 REJECTED') x 5],
              'two zones, the fast one rejects') or diag("@st")
        if $s->topology ne 'cluster';
    my $ahead = quota_ahead($k);
    # the fast zone's rejections are not cached (it is used with the
    # quota): the 2nd to 6th each give their admission back
    ok($ahead <= 1, sprintf('the quota is charged once: %.2f intervals '
                            . 'ahead (2: the refund lost)', $ahead));
};

# the quota's key, once a refund sent has landed (undef: given back)
sub quota_key {
    my ($k) = @_;
    my $v;
    for (1 .. 20) {
        $v = $s->redis->get(rl_key('quota', $k));
        last if !defined $v;
        sleep 0.1;
    }
    return $v;
}

# The fast zone's command fails (its key is not a string: WRONGTYPE, an
# error reply), the quota's admits: the request falls back (closed: 503;
# local: this node's share), and the quota is given its admission back,
# as when the fast zone rejects.
subtest 'Redis: a zone fails, the one that admitted is refunded' => sub {
    my $k = "wt$$";
    $s->redis->hset(rl_key('fast', $k), 'x', 1);
    is(st("/closed/?k=$k"), '503 CLOSED', 'closed: 503');
    is(quota_key($k), undef, 'the quota given back');
    is(st("/enforce/?k=$k"), '200 LOCAL_PASSED', 'local: its share');
    is(quota_key($k), undef, 'the quota given back (in Redis)');
    my @q = map { get("/quota/?k=$k")->code } 1 .. 6;
    is_deeply(\@q, [(200) x 5, 429], 'the quota whole in Redis')
        or diag("@q");
};

# A zone Redis answered refused: the request is refused, whatever became
# of the other zone's command (an error reply here); it was handed to the
# fallback, which admits a request over its limit (its share, or open)
subtest 'Redis: a zone fails, another refuses: refused' => sub {
    my $k = "wr$$";
    my @q = map { get("/quota/?k=$k")->code } 1 .. 6;
    is_deeply(\@q, [(200) x 5, 429], 'the quota spent') or diag("@q");
    $s->redis->hset(rl_key('fast', $k), 'x', 1);
    is(st("/closed/?k=$k"), '429 REJECTED', 'closed: refused, not 503');
    is(st("/enforce/?k=$k"), '429 REJECTED', 'local: refused, not its share');
    like(get("/enforce/?k=$k")->headers->header('RateLimit') // '',
         qr/^"quota";r=0;t=\d+$/, 'RateLimit: the zone that answered');
};

$s->stop_redis;

subtest 'local: dry run charges nothing another zone rejects' => sub {
    quota_left('enforce', "le$$", '200 LOCAL_PASSED', '429 LOCAL_REJECTED');
    quota_left('dry', "ld$$", '200 LOCAL_PASSED', '200 LOCAL_REJECTED');
};

subtest 'local: RateLimit of a zone not charged' => sub {
    refunded_headers("lh$$", '200 LOCAL_PASSED', '429 LOCAL_REJECTED');
};

$s->stop;

# A Redis Cluster whose slot of the quota's key is migrating (as during a
# reshard): the key is on neither node, so its master answers ASK to the
# pipeline's EVALSHA and, the request answered, to the refund's as well.
# The refund, with no request left to answer, must follow it too.
subtest 'cluster: a refund follows ASK' => sub {
    $s = LG::Stack->new(redis => 'cluster', stub => 0, WORKERS => 1,
                        HTTP_EXTRA => $http, SERVER_EXTRA => $server)->start;
    my $r = $s->redis;
    my $k = "ask$$";
    my $key = rl_key('quota', $k);
    my $slot = LG::RedisCluster::keyslot($key);
    my $src = $s->cluster_master_of($key);
    my ($dst) = grep { $_ != $src } $s->cluster_masters;
    my %id = map { $_ => scalar $r->node($_)->cluster('myid') } $src, $dst;
    $r->node($dst)->cluster('setslot', $slot, 'importing', $id{$src});
    $r->node($src)->cluster('setslot', $slot, 'migrating', $id{$dst});

    is(st("/enforce/?k=$k"), '200 PASSED', 'both admit, the quota on '
       . 'the importing node');
    is(st("/enforce/?k=$k"), '429 REJECTED', 'the fast zone rejects');
    my $ahead = quota_ahead($k);
    ok($ahead <= 1, sprintf('the quota is charged once: %.2f intervals '
                            . 'ahead (2: the refund dropped at ASK)',
                            $ahead));
};

# The master of the fast zone's key refuses writes (more replicas asked
# for than it has: NOREPLICAS), the quota's master admits: the quota's
# state is left as it was.
subtest 'cluster: a master refusing writes, the other zone refunded' => sub {
    my $r = $s->redis;
    my ($k) = grep { $s->cluster_master_of(rl_key('fast', $_))
                     != $s->cluster_master_of(rl_key('quota', $_)) }
              map { "nr$_" } 0 .. 1000;
    my $m = $r->node($s->cluster_master_of(rl_key('fast', $k)));
    $m->config_set('min-replicas-to-write', 3);
    my @st = (st("/closed/?k=$k"), st("/enforce/?k=$k"));
    $m->config_set('min-replicas-to-write', 0);
    is_deeply(\@st, ['503 CLOSED', '200 LOCAL_PASSED'],
              'the request falls back') or diag("@st");
    is(quota_key($k), undef, 'the quota\'s key as it was (none)');
    like($s->error_log, qr/NOREPLICAS/, 'the refusal logged');
};

$s->stop;

# The quota's command cannot be written (hiredis refuses it, as it does
# on a connection being closed or out of memory: a shim preloaded into
# nginx refuses the bytes naming its key) after the fast zone's was: the
# fast zone's may still run, and admit. Its reply is waited for, and the
# request falls back with the fast zone given its admission back, as
# when the quota's command fails in Redis (not charged for a request
# the limit did not decide).
sub write_fails_nginx {
    my ($fails) = @_;
    my $tmp = File::Temp::tempdir(CLEANUP => 1);
    chmod 0755, $tmp;
    open my $fh, '>', "$tmp/shim.c" or die "$tmp/shim.c: $!";
    print $fh <<'C';
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

typedef int (*lg_write_pt)(void *, void *, void *, const char *, size_t);

static char    lg_fails[256];
static size_t  lg_fails_len;

/* read in the master: a worker's environment is cleared */
__attribute__((constructor)) static void
lg_init(void)
{
    const char  *s = getenv("LG_WRITE_FAILS");

    if (s != NULL && strlen(s) < sizeof(lg_fails)) {
        lg_fails_len = strlen(s);
        memcpy(lg_fails, s, lg_fails_len);
    }
}

int
redisAsyncFormattedCommand(void *ac, void *fn, void *privdata,
    const char *cmd, size_t len)
{
    void               *lib;
    static lg_write_pt  real;

    if (real == NULL) {
        real = (lg_write_pt) dlsym(RTLD_NEXT, "redisAsyncFormattedCommand");
    }

    if (real == NULL) {
        lib = dlopen("libhiredis.so.0.14", RTLD_NOW | RTLD_NOLOAD);
        real = (lg_write_pt) dlsym(lib, "redisAsyncFormattedCommand");
    }

    if (lg_fails_len && memmem(cmd, len, lg_fails, lg_fails_len) != NULL) {
        return -1;   /* REDIS_ERR */
    }

    return real(ac, fn, privdata, cmd, len);
}
C
    close $fh;
    system('cc', '-shared', '-fPIC', '-o', "$tmp/shim.so", "$tmp/shim.c",
           '-ldl') == 0 or die "the shim did not build";
    open $fh, '>', "$tmp/nginx" or die "$tmp/nginx: $!";
    print $fh "#!/bin/sh\nLD_PRELOAD=$tmp/shim.so LG_WRITE_FAILS='$fails'"
              . " exec /usr/sbin/nginx \"\$\@\"\n";
    close $fh;
    chmod 0755, "$tmp/nginx";
    return "$tmp/nginx";
}

# the fast zone's key, once a refund sent has landed (undef: given back)
sub fast_key {
    my ($k) = @_;
    my $v;
    for (1 .. 20) {
        $v = $s->redis->get(rl_key('fast', $k));
        last if !defined $v;
        sleep 0.1;
    }
    return $v;
}

SKIP: {
    # its own nginx wrapper (make asan's) would lose the shim's preload
    skip 'LG_NGINX set: the shim is preloaded into /usr/sbin/nginx', 1
        if $ENV{LG_NGINX};

    subtest 'a zone\'s command not written, the other\'s refunded' => sub {
        my $k = "wf$$";
        $s = do {
            local $ENV{LG_NGINX} = write_fails_nginx(rl_key('quota', $k));
            LG::Stack->new(stub => 0, WORKERS => 1, HTTP_EXTRA => $http,
                           SERVER_EXTRA => $server);
        };
        $s->start;
        is(st("/closed/?k=$k"), '503 CLOSED', 'closed: 503');
        is(fast_key($k), undef, 'the fast zone given back');
        is(st("/enforce/?k=$k"), '200 LOCAL_PASSED', 'local: its share');
        is(fast_key($k), undef, 'the fast zone given back (local)');
        like($s->error_log, qr/redis pipeline not sent/,
             'the write refused, logged');
        is(st("/enforce/?k=o$k"), '200 PASSED', 'another key: Redis');
        $s->stop;
    };
}

done_testing;
