# The reject-path cache: once Redis rejected a key of a zone, a worker
# answers that key's rejections itself until the time Redis gave (no node
# can admit it earlier), with the same Retry-After and RateLimit; the key
# passes as soon as that time has come. Not for a zone that some location
# uses with another zone: a refund (another zone rejected a request it
# admitted) lowers its TAT, so it may pass earlier.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use Mojo::UserAgent;
use LG::Stack;
use LG::Test ();
use LG::Limit qw(rl_key evalsha_calls);

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone slow key=\$arg_k rate=1r/h;
    linegate_limit_zone fast key=\$arg_k rate=2r/s;
    linegate_limit_zone other key=\$arg_k rate=10r/h burst=5;
    linegate_limit_zone pair key=\$arg_k rate=1r/h;
    linegate_limit_zone d key=\$arg_k rate=2r/h burst=1;
    linegate_limit_zone s key=\$arg_k rate=1r/h;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /slow/ { linegate_limit zone=slow; try_files /file.txt =404; }
        location /fast/ { linegate_limit zone=fast; try_files /file.txt =404; }
        location /two/ {
            linegate_limit zone=other;
            linegate_limit zone=pair;
            try_files /file.txt =404;
        }
        location /d/ { linegate_limit zone=d; try_files /file.txt =404; }
        location /sd/ {
            linegate_limit zone=s;
            linegate_limit zone=d;
            try_files /file.txt =404;
        }
        location /dry/ {
            linegate_limit zone=slow;
            linegate_limit_dry_run on;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $r = $s->redis;
my $ua = $s->ua;

sub get { return $ua->get($s->url($_[0]))->res }

subtest 'rejections answered without Redis' => sub {
    my $k = "c1_$$";
    is(get("/slow/?k=$k")->code, 200, 'admitted');
    my $t0 = Time::HiRes::time();
    my $first = get("/slow/?k=$k");
    is($first->code, 429, 'rejected by Redis');
    my $ra = $first->headers->header('Retry-After');

    my $before = evalsha_calls($r);
    my @res = map { get("/slow/?k=$k") } 1 .. 20;
    my $asked = evalsha_calls($r) - $before;
    # an entry is trusted for a second from its rejection (before $t0,
    # the first one's): each worker asks again then
    my $most = 1 + 2 * (1 + int(Time::HiRes::time() - $t0));
    is_deeply([map { $_->code } @res], [(429) x 20], '20 more rejected');
    ok($asked <= $most, "Redis asked $asked times for 20 rejections "
                        . "(at most $most: the other worker, once a "
                        . 'second each)');
    is($res[-1]->headers->header('X-Limit'), 'REJECTED', 'REJECTED');
    ok($res[-1]->headers->header('Retry-After') <= $ra
       && $res[-1]->headers->header('Retry-After') >= $ra - 2,
       'the same Retry-After, counting down');
    like($res[-1]->headers->header('RateLimit') // '',
         qr/^"slow";r=0;t=\d+$/, 'RateLimit from the cache');

    is(get("/slow/?k=other$$")->code, 200, 'another key: asked, admitted');
};

subtest 'the key passes once the time has come' => sub {
    my $k = "c2_$$";
    my $t0 = Time::HiRes::time();
    is(get("/fast/?k=$k")->code, 200, 'admitted');
    my $res = get("/fast/?k=$k");
    my $t1 = Time::HiRes::time();
    if ($res->code == 200) {
        # this machine took more than 500 ms between two requests: then
        # the second was admitted because the interval passed, which
        # the widest measure (the first sent, the second answered)
        # shows; a limiter that never rejects fails here
        cmp_ok($t1 - $t0, '>=', 0.5,
               'admitted again: the interval (500 ms) had passed')
            or diag(sprintf '%.3f s', $t1 - $t0);
        return;
    }
    is($res->code, 429, 'rejected, at most 500 ms to wait');
    is(get("/fast/?k=$k")->code, 429, 'and from the cache');
    sleep 0.6;
    is(get("/fast/?k=$k")->code, 200, 'after the interval: admitted');
};

subtest 'several zones: their rejections are not cached' => sub {
    my $k = "c3_$$";
    is(get("/two/?k=$k")->code, 200, 'admitted by both');
    is(get("/two/?k=$k")->code, 429, 'zone pair rejects');
    my $before = evalsha_calls($r);
    my $res;
    $res = get("/two/?k=$k") for 1 .. 10;
    # two zones a request, and the refund of the zone that admitted
    ok(evalsha_calls($r) - $before >= 20, 'Redis asked each time ('
       . (evalsha_calls($r) - $before) . ' EVALSHA): other can be refunded '
       . 'below its cached rejection, and so can pair');
    is($res->code, 429, 'rejected');
    like($res->headers->header('RateLimit-Policy') // '',
         qr/^"other";q=10;w=3600, "pair";q=1;w=3600$/, 'both policies');
    like($res->headers->header('RateLimit') // '',
         qr/^"other";r=5;t=\d+, "pair";r=0;t=\d+$/,
         'other as the refunds leave it: charged once');
};

# The reviewer's race, made deterministic: zone d (2r/h burst=1) has one
# slot left and s none; a request to /sd/ is admitted by d (its last
# slot) and rejected by s while, on another worker or node, /d/ is
# rejected by d; then the refund gives d its slot back. The refund is
# made here by the test, as another node's would land: d's rejection
# must not be answered from a cache after it.
subtest 'a refund after a rejection: the key passes again' => sub {
    my $k = "c6_$$";
    is(get("/d/?k=$k")->code, 200, 'd: the first slot');
    is(get("/d/?k=$k")->code, 200, 'd: the second, the burst');
    my $rej = get("/d/?k=$k");
    is($rej->code, 429, 'd rejects');
    ok($rej->headers->header('Retry-After') > 1700,
       'for half an hour (' . $rej->headers->header('Retry-After') . ' s)');
    get("/d/?k=$k") for 1 .. 2;    # on both workers, if any cached it

    open my $fh, '<', "$LG::Stack::ROOT/src/lua/rl_refund.lua" or die $!;
    my $refund = do { local $/; <$fh> };
    is($r->eval($refund, 1, rl_key('d', $k), 1800e6), 1,
       'a refund of d lands (another node\'s /sd/)');

    my @st = map { get("/d/?k=$k")->code } 1 .. 2;
    is_deeply(\@st, [200, 429], 'the slot given back is taken, once')
        or diag("@st");
};

# A zone used alone here may be used with another zone on another node
# sharing the Redis (a rolling deploy, server groups sharing the name),
# whose refunds lower its TAT: a cached rejection is trusted for a second
# at most, then Redis is asked again.
subtest 'a zone used alone here, refunded by another node' => sub {
    my $k = "c7_$$";
    is(get("/slow/?k=$k")->code, 200, 'slow: admitted');
    is(get("/slow/?k=$k")->code, 429, 'slow: rejected for an hour');
    get("/slow/?k=$k") for 1 .. 2;    # on both workers, if any cached it

    open my $fh, '<', "$LG::Stack::ROOT/src/lua/rl_refund.lua" or die $!;
    my $refund = do { local $/; <$fh> };
    is($r->eval($refund, 1, rl_key('slow', $k), 3600e6), 1,
       'a refund of slow lands (another node\'s two-zone location)');
    sleep 1.1;
    my @st = map { get("/slow/?k=$k")->code } 1 .. 2;
    is_deeply(\@st, [200, 429], 'within a second: the slot given back is '
              . 'taken, once') or diag("@st");
};

# lines "limiting requests" of key $k in the error log since $from, by
# level
sub rejections_logged {
    my ($st, $from, $k) = @_;
    my %n;
    for (split /\n/, substr($st->error_log, $from)) {
        $n{$1}++ if /\[(\w+)\].* limiting requests.*[?&]k=\Q$k\E[ &]/;
    }
    return \%n;
}

# Every rejection is logged once a zone, at linegate_limit_log_level
# (default error, as limit_req_log_level), those answered from the cache
# too
subtest 'rejections logged at error, cached ones too' => sub {
    my $k = "c8_$$";
    my $from = length $s->error_log;
    my @st = map { get("/slow/?k=$k")->code } 1 .. 12;
    my $rejected = grep { $_ == 429 } @st;
    is($rejected, 11, '11 rejected, most from the cache') or diag("@st");
    is_deeply(rejections_logged($s, $from, $k), {error => $rejected},
              'one line each, at error') or diag(substr($s->error_log, $from));
};

subtest 'dry run does not use the cache' => sub {
    my $k = "c4_$$";
    get("/dry/?k=$k") for 1 .. 2;
    my $before = evalsha_calls($r);
    my @st = map { get("/dry/?k=$k")->headers->header('X-Limit') } 1 .. 5;
    is_deeply(\@st, [('REJECTED_DRY_RUN') x 5], 'dry run');
    is(evalsha_calls($r) - $before, 5, 'each one asked');
};

# nginx's ngx_murmur_hash2, which indexed the cache before 2026-11-29:
# a client could compute a key sharing a rejected key's slot
sub murmur2 {
    use integer;
    my @b = unpack 'C*', $_[0];
    my ($m, $len, $i) = (0x5bd1e995, scalar @b, 0);
    my $h = $len & 0xffffffff;

    while ($len - $i >= 4) {
        my $k = $b[$i] | ($b[$i + 1] << 8) | ($b[$i + 2] << 16)
                | ($b[$i + 3] << 24);
        $k = ($k * $m) & 0xffffffff;
        $k ^= $k >> 24;
        $k = ($k * $m) & 0xffffffff;
        $h = ($h * $m) & 0xffffffff;
        $h ^= $k;
        $i += 4;
    }

    my $rem = $len - $i;
    $h ^= $b[$i + 2] << 16 if $rem >= 3;
    $h ^= $b[$i + 1] << 8 if $rem >= 2;
    if ($rem >= 1) { $h ^= $b[$i]; $h = ($h * $m) & 0xffffffff }
    $h ^= $h >> 13;
    $h = ($h * $m) & 0xffffffff;
    $h ^= $h >> 15;
    return $h & 0xffffffff;
}

subtest 'a key chosen to share a rejected key\'s slot evicts nothing' => sub {
    my $victim = "victim_$$";
    my $slot = murmur2(rl_key('slow', $victim)) % 2048;
    my ($chosen) = grep { murmur2(rl_key('slow', $_)) % 2048 == $slot }
                   map { "a$_" } 1 .. 1_000_000;
    ok(defined $chosen, 'a colliding key found offline');

    get("/slow/?k=$_") for $victim, $victim, $chosen, $chosen;

    my $before = evalsha_calls($r);
    for (1 .. 10) {
        is(get("/slow/?k=$victim")->code, 429, 'victim rejected');
        is(get("/slow/?k=$chosen")->code, 429, 'chosen key rejected');
    }
    is(evalsha_calls($r) - $before, 0,
       'both rejections answered by the worker, alternating 10 times');
};

subtest 'a reload keeps the counts (in Redis; the caches start empty)' => sub {
    my $k = "c5_$$";
    is(get("/slow/?k=$k")->code, 200, 'admitted');
    is(get("/slow/?k=$k")->code, 429, 'rejected');
    my $from = length $s->error_log;
    kill 'HUP', $s->{pids}{nginx};
    ok($s->wait_redis_connected($from, 10), 'new workers up');
    # and the old ones gone: until they get the master's QUIT they still
    # accept, with their caches
    my $until = time + 10;
    sleep 0.05 while split(' ', `pgrep -P $s->{pids}{nginx}`) > 2
                     && time < $until;
    my $before = evalsha_calls($r);
    # a new connection: only the new workers accept
    my $res = Mojo::UserAgent->new->get($s->url("/slow/?k=$k"))->res;
    is($res->code, 429, 'still rejected after the reload');
    ok(evalsha_calls($r) - $before >= 1, 'by Redis: a new worker asked it');
};

$s->stop;

# linegate_limit_log_level: a rejection at that level, a dry run's one
# lower, in the local fallback too; nothing above it
subtest 'linegate_limit_log_level' => sub {
    my $server = <<"CONF";
        root $dir;
        linegate_limit_log_level warn;
        location /w/ { linegate_limit zone=slow; try_files /file.txt =404; }
        location /dry/ {
            linegate_limit zone=slow;
            linegate_limit_dry_run on;
            try_files /file.txt =404;
        }
        location /local/ {
            linegate_limit zone=slow;
            linegate_limit_on_error local;
            try_files /file.txt =404;
        }
        location /info/ {
            linegate_limit zone=slow;
            linegate_limit_log_level info;
            linegate_limit_dry_run on;
            try_files /file.txt =404;
        }
CONF
    $s = LG::Stack->new(stub => 0, HTTP_EXTRA => $http,
                        SERVER_EXTRA => $server)->start;
    $ua = $s->ua;

    my $k = "l1_$$";
    my $from = length $s->error_log;
    my @st = map { get("/w/?k=$k")->code } 1 .. 8;
    my $rejected = grep { $_ == 429 } @st;
    is($rejected, 7, '7 rejected') or diag("@st");
    is_deeply(rejections_logged($s, $from, $k), {warn => $rejected},
              'at warn, the cached ones too, none at error');

    $k = "l2_$$";
    $from = length $s->error_log;
    @st = map { get("/dry/?k=$k")->code } 1 .. 4;
    is_deeply(\@st, [(200) x 4], 'dry run');
    is_deeply(rejections_logged($s, $from, $k), {notice => 3},
              'its rejections at notice');

    $k = "l3_$$";
    $from = length $s->error_log;
    get("/info/?k=$k") for 1 .. 3;
    is_deeply(rejections_logged($s, $from, $k), {info => 2},
              'info stays info in dry run');

    $k = "l4_$$";
    $s->stop_redis;
    $from = length $s->error_log;
    @st = map { get("/local/?k=$k")->code } 1 .. 3;
    is_deeply(\@st, [200, 429, 429], 'the local fallback rejects');
    is_deeply(rejections_logged($s, $from, $k), {warn => 2},
              'at warn too');
};

done_testing;
