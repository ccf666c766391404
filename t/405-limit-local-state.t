# linegate_limit_on_error local, the states in shared memory, on one
# worker (one process decides every request): several zones of one
# request each keep their own state (looking up one zone's node never
# evicts another's of the same request); a key's state is kept from one
# outage to the next, whatever Redis decided between them (a Redis that
# answers some commands and not others gives no key a new burst); a
# tolerance larger than the Unix time in microseconds admits.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test ();

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone day key=\$arg_k rate=1r/h burst=0;
    linegate_limit_zone fast key=\$arg_k rate=1000r/s burst=0;
    linegate_limit_zone q key=\$arg_k rate=1r/h burst=1;
    linegate_limit_zone huge key=\$arg_k rate=1r/d burst=30000;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /strict-first/ {
            linegate_limit zone=day;
            linegate_limit zone=fast;
            linegate_limit_on_error local;
            try_files /file.txt =404;
        }
        location /q/ {
            linegate_limit zone=q;
            linegate_limit_on_error local;
            try_files /file.txt =404;
        }
        location /huge/ {
            linegate_limit zone=huge;
            linegate_limit_on_error local;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, WORKERS => 1, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $ua = $s->ua;

sub get {
    my $res = $ua->get($s->url($_[0]))->res;
    return $res->code . ' ' . ($res->headers->header('X-Limit') // '');
}

is(get("/q/?k=up$$"), '200 PASSED', 'Redis decides while it is up');

$s->stop_redis;

# first: the zones' nodes are then the only ones, at the LRU's tail
subtest 'two zones: the first listed is enforced too' => sub {
    my @st;
    for (1 .. 6) {
        push @st, get("/strict-first/?k=s$$");
        sleep 0.05;
    }
    is_deeply(\@st, ['200 LOCAL_PASSED', ('429 LOCAL_REJECTED') x 5],
              'zone day (1r/h, burst 0): one, then rejections')
        or diag("@st");
};

subtest 'a tolerance beyond the Unix time in microseconds' => sub {
    # burst 30000 at 1r/d: tau is some 82 years
    my @st = map { get("/huge/?k=h$$") } 1 .. 3;
    is_deeply(\@st, [('200 LOCAL_PASSED') x 3], 'admitted') or diag("@st");
};

subtest 'a key keeps its state from one outage to the next' => sub {
    my @st = map { get("/q/?k=o$$") } 1 .. 3;
    is_deeply(\@st, ['200 LOCAL_PASSED', '200 LOCAL_PASSED',
                     '429 LOCAL_REJECTED'], 'outage 1: burst 1, then 429')
        or diag("@st");

    # Redis decides in a later second than outage 1's charges: until
    # 2026-11-29 a state charged before Redis last decided counted as
    # empty, and a flapping Redis gave each key its burst again about
    # every second
    sleep 1.1;
    my $mark = length $s->error_log;
    $s->start_redis;
    ok($s->wait_redis_connected($mark, 10), 'Redis back, reconnected');
    # a new redis-server: empty, as after a FLUSHALL
    is(get("/q/?k=o$$"), '200 PASSED', 'Redis decides, from empty');
    is(get("/q/?k=p$$"), '200 PASSED', 'another key, by Redis');
    sleep 1.1;
    is(get("/q/?k=p$$"), '200 PASSED', 'Redis decides a second later');

    $s->stop_redis;
    is(get("/q/?k=o$$"), '429 LOCAL_REJECTED',
       'outage 2: the key is where outage 1 left it, no new burst');
    is(get("/q/?k=p$$"), '200 LOCAL_PASSED',
       'a key outage 1 did not charge starts empty');
    is(get("/q/?k=p$$"), '200 LOCAL_PASSED', 'its burst');
    is(get("/q/?k=p$$"), '429 LOCAL_REJECTED', 'then the limit');
};

done_testing;
