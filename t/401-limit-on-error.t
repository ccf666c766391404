# linegate_limit_on_error with Redis stopped and with Redis paused
# (SIGSTOP): closed answers 503 + Retry-After, open lets through after at
# most the command timeout, local enforces a per-node share of each zone
# in shared memory; a fallback is logged once a second per worker, not
# per request; decisions go back to Redis when it answers again. Redis
# answering errors (out of memory) is logged once a second per worker
# too, not once per request.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test qw(timed);

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone z key=\$arg_k rate=1r/h burst=5;
    linegate_limit_zone w key=\$arg_k rate=2r/h burst=3;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /open/ {
            linegate_limit zone=z;
            try_files /file.txt =404;
        }
        location /default/ {
            linegate_limit zone=z;
            try_files /file.txt =404;
        }
        location /closed/ {
            linegate_limit zone=z;
            linegate_limit_on_error closed;
            try_files /file.txt =404;
        }
        location /closed-dry/ {
            linegate_limit zone=z;
            linegate_limit_on_error closed;
            linegate_limit_dry_run on;
            try_files /file.txt =404;
        }
        location /local/ {
            linegate_limit zone=z;
            linegate_limit_on_error local share=3;
            try_files /file.txt =404;
        }
        location /local2/ {
            linegate_limit zone=z;
            linegate_limit zone=w;
            linegate_limit_on_error local share=2;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $ua = $s->ua;
my $n = 0;

sub key { return 'k' . ++$n . '_' . $$ }

sub get { return $ua->get($s->url($_[0]))->res }

sub fallbacks {
    my ($from) = @_;
    my @l = substr($s->error_log, $from)
        =~ /\[error\].*Redis did not answer, requests fall back/g;
    return scalar @l;
}

sub modes_ok {
    my ($what) = @_;

    my $k = key();
    my ($secs, $res) = timed { get("/open/?k=$k") };
    is($res->code, 200, "$what: open lets through");
    is($res->headers->header('X-Limit'), 'OPEN', "$what: OPEN");
    is($res->headers->header('RateLimit'), undef,
       "$what: no RateLimit state without numbers");
    is($res->headers->header('RateLimit-Policy'), '"z";q=1;w=3600',
       "$what: the policy still");
    ok($secs < 2.5, sprintf("$what: open within the command timeout "
                            . "(500 ms) and some slack: %.2f s", $secs));

    $res = get("/default/?k=$k");
    is($res->headers->header('X-Limit'), 'OPEN', "$what: open by default");

    $res = get("/closed/?k=$k");
    is($res->code, 503, "$what: closed answers 503");
    is($res->headers->header('Retry-After'), '1', "$what: Retry-After 1");
    is($res->headers->header('X-Limit'), 'CLOSED', "$what: CLOSED");

    $res = get("/closed-dry/?k=$k");
    is($res->code, 200, "$what: closed in dry run lets through");

    # share=3 of rate 1r/h burst 5: burst 1 locally, so 2 pass, then 429
    my @st = map {
        my $r = get("/local/?k=$k");
        [$r->code, $r->headers->header('X-Limit') // '']
    } 1 .. 4;
    is_deeply(\@st, [[200, 'LOCAL_PASSED'], [200, 'LOCAL_PASSED'],
                     [429, 'LOCAL_REJECTED'], [429, 'LOCAL_REJECTED']],
              "$what: local enforces the node's share (both workers)");
    $res = get("/local/?k=$k");
    ok($res->headers->header('Retry-After') > 3600 * 3 - 60,
       "$what: local Retry-After from the share's interval ("
       . $res->headers->header('Retry-After') . ')');
    like($res->headers->header('RateLimit') // '', qr/^"z";r=0;t=\d+$/,
         "$what: local RateLimit state");
    is($res->headers->header('RateLimit-Policy'), '"z";q=1;w=10800',
       "$what: local policy, the node's share (1r/h over 3 nodes)");

    # two zones, share 2: z burst 2 (5/2), w burst 1 (3/2): w limits
    my $k2 = key();
    my @r2 = map { get("/local2/?k=$k2") } 1 .. 3;
    is_deeply([map { $_->code } @r2], [200, 200, 429],
              "$what: local with two zones");
    is($r2[0]->headers->header('RateLimit-Policy'),
       '"z";q=1;w=7200, "w";q=2;w=7200',
       "$what: local policy of two zones, each at the node's share");

    my $k3 = key();
    is(get("/local/?k=$k3")->code, 200, "$what: another key has its own");
}

is(get('/open/?k=up')->headers->header('X-Limit'), 'PASSED', 'Redis up');

subtest 'Redis stopped' => sub {
    my $mark = length $s->error_log;
    $s->stop_redis;
    my $t0 = time;
    modes_ok('stopped');
    get('/open/?k=many') for 1 .. 20;
    my $secs = time - $t0;
    my $logged = fallbacks($mark);
    ok($logged >= 1, "the fallback is logged at error level ($logged)");
    ok($logged <= 2 * (int($secs) + 2),
       "at most once a second per worker: $logged lines in "
       . sprintf('%.1f s for 35 requests', $secs));
    my @per_request = substr($s->error_log, $mark)
        =~ /redis not connected|redis command not sent/g;
    is(scalar @per_request, 0, 'no log line per request from the Redis '
                               . 'client either');
};

subtest 'Redis back' => sub {
    my $mark = length $s->error_log;
    $s->start_redis;
    ok($s->wait_redis_connected($mark, 10), 'workers reconnected');
    my $k = key();
    my $res = get("/local/?k=$k");
    is($res->headers->header('X-Limit'), 'PASSED', 'Redis decides again');
    like($res->headers->header('RateLimit') // '', qr/^"z";r=1;/,
         'with the fleet numbers (5 left, r at most q: 1)');
    is($res->headers->header('RateLimit-Policy'), '"z";q=1;w=3600',
       'and the fleet policy');
};

subtest 'Redis paused (SIGSTOP)' => sub {
    my $pid = $s->{pids}{redis};
    my $mark = length $s->error_log;
    kill 'STOP', $pid;
    my $ok = eval { modes_ok('paused'); 1 };
    kill 'CONT', $pid;
    die $@ unless $ok;
    ok(fallbacks($mark) >= 1, 'logged');
    ok($s->wait_redis_connected($mark, 10) || 1, 'reconnected if dropped');
    my $k = key();
    my $res;
    for (1 .. 50) {
        $res = get("/open/?k=$k");
        last if ($res->headers->header('X-Limit') // '') eq 'PASSED';
        sleep 0.1;
    }
    is($res->headers->header('X-Limit'), 'PASSED', 'Redis decides again');
};

# Redis up but refusing every write (-OOM; -LOADING, -BUSY, -READONLY,
# -MISCONF are alike): each request falls back, and neither the Redis
# client nor the limiter logs a line per request
subtest 'Redis out of memory' => sub {
    my $r = $s->redis;
    my @nodes = $s->topology eq 'cluster'
              ? map { $r->node($_) } $s->cluster_masters : ($r);
    my $k = key();
    is(get("/open/?k=$k")->headers->header('X-Limit'), 'PASSED', 'Redis up');
    my %policy = map { $_ => ($_->config_get('maxmemory-policy'))[1] }
                 @nodes;
    for my $n (@nodes) {
        $n->config_set('maxmemory-policy', 'noeviction');
        $n->config_set('maxmemory', 1);
    }
    my $mark = length $s->error_log;
    my $t0 = time;
    my @st = map { get('/open/?k=' . key())->headers->header('X-Limit') }
             1 .. 30;
    push @st, map { get('/local2/?k=' . key())->headers->header('X-Limit') }
              1 .. 10;
    my $secs = time - $t0;
    for my $n (@nodes) {
        $n->config_set('maxmemory', 0);
        $n->config_set('maxmemory-policy', $policy{$n});
    }
    my $log = substr($s->error_log, $mark);
    is_deeply(\@st, [('OPEN') x 30, ('LOCAL_PASSED') x 10],
              'every request falls back') or diag("@st");
    my @err = $log =~ /redis\ unavailable|redis\ error
                       |unexpected\ linegate_limit\ reply/gx;
    ok(@err >= 1, 'the refusal is logged (' . scalar(@err) . ')')
        or diag($log);
    ok(@err <= 2 * (int($secs) + 2),
       scalar(@err) . ' lines for 40 requests in '
       . sprintf('%.1f s: once a second per worker', $secs))
        or diag(join "\n", (split /\n/, $log)[0 .. 5]);
    like($log, qr/redis unavailable: "OOM [^"]*" \(logged once a second/,
         'the line says it is logged once a second');
};

done_testing;
