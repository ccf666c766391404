# A new worker's first connection (at start, after nginx -s reload) is
# made asynchronously: behind Sentinel the master is first asked of the
# sentinels, then connected to and its ROLE checked. A request that
# comes meanwhile waits for that connection (at most
# linegate_redis_command_timeout) instead of being answered as if Redis
# were down: no 503 STORE_UNAVAILABLE from the APIs, no
# linegate_limit_on_error fallback (closed: 503) right after each reload.
#
# The window is made as long as the test needs with its own sentinel
# (LG::FakeSentinel, first in the list), which keeps the new worker's
# query back until released. A request ended while it waits (a second
# reload's worker_shutdown_timeout) frees its command: no crash, and the
# draining worker exits.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use Mojo::IOLoop;
use Mojo::Promise;
use Mojo::UserAgent;
use Time::HiRes qw(time sleep);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually public_dir);
use LG::Lines;
use LG::Limit qw(hot_location_conf);
use LG::FakeSentinel;

my $SETTLE = 30;
my $N = 6;

my ($http, $server) = hot_location_conf(public_dir('file.txt' => "ok\n"));

my $fake = LG::FakeSentinel->new;
my $fake_port = $fake->port;

my $s = LG::Stack->new(redis => 'sentinel', WORKERS => 1,
                       REDIS_COMMAND_TIMEOUT => '15s',
                       MAIN_EXTRA => 'worker_shutdown_timeout 1s;',
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server,
                       first_sentinel => $fake_port)->start;
my $l = LG::Lines->new($s);

ok($s->wait_sentinels_ready($SETTLE), 'the sentinels know each other and '
   . 'both replicas');
$fake->start(master => $s->redis_port);
my $w = $l->workspace('org_warm', plan => 'growth');

# a new worker (nginx -s reload), whose query to our sentinel is kept
# back: its connection is being made while the requests come
sub reload_held {
    $fake->start(master => $s->redis_port, hold => 1);
    my $from = length $s->error_log;
    kill 'HUP', $s->{pids}{nginx};
    ok(eventually(sub { $fake->asked }, $SETTLE),
       'the new worker asks our sentinel, kept back');
    # the old one no longer takes requests (its listeners closed then)
    ok(eventually(sub {
           substr($s->error_log, $from) =~ /gracefully shutting down/
       }, $SETTLE), 'the old worker drains');
    return $from;
}

# one_tick until $done->() (at most $secs s)
sub run_until {
    my ($done, $secs) = @_;
    my $until = time + $secs;
    # (one_tick returns at least this often, answers or not)
    my $tick = Mojo::IOLoop->recurring(0.05 => sub { });
    Mojo::IOLoop->one_tick while !$done->() && time < $until;
    Mojo::IOLoop->remove($tick);
}

# @reqs started, the answers that come within $wait s (all of them when
# the module answers at once, as it did), $then->($all) run if given (a
# sub that runs the loop until $all->() says every request ended), then
# the sentinel released: every status, in order ('closed': none)
sub statuses {
    my ($wait, $then, @reqs) = @_;
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 30,
                                  request_timeout => 30,
                                  max_connections => 0);
    my @status = (undef) x @reqs;
    my $answered = 0;
    my @p = map {
        my $i = $_;
        my ($hdr, $path) = @{ $reqs[$i] };
        $ua->start_p($ua->build_tx(GET => $s->url($path) => $hdr))
            ->then(sub { $status[$i] = $_[0]->res->code // 'none' },
                   sub { $status[$i] = 'closed' })
            ->finally(sub { $answered++ });
    } 0 .. $#reqs;
    my $all = sub { $answered == @reqs };
    run_until($all, $wait);
    my $early = $answered;
    $then->($all) if $then;
    $fake->release;
    Mojo::Promise->all_settled(@p)->wait if $answered < @reqs;
    return ($early, @status);
}

my @reqs = ((map { [{}, "/hot/f?k=warm$_"] } 1 .. $N),
            (map { [$w->{auth}, '/api/lines/by-user'] } 1 .. $N));

subtest 'requests in a new worker wait for its first connection' => sub {
    my $from = reload_held();
    my ($early, @st) = statuses(3, undef, @reqs);
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 (not '
              . '503) once the connection is made')
        or diag("statuses: @st; $early answered before the release");
    ok($s->wait_redis_connected($from, $SETTLE), 'the worker connected');
    unlike(substr($s->error_log, $from), qr/redis not connected/,
           'no request found it not connected');
};

subtest 'a request whose client left while it waited' => sub {
    my $from = reload_held();
    my @c = map {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $s->{port})
            or die "connect: $!";
        print $c "GET $_ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        $c;
    } '/hot/f?k=gone', '/hot/f?k=gone2';
    sleep 0.3;    # (not a timing assertion: read below either way)
    close $_ for @c;
    my ($early, @st) = statuses(1, undef, [{}, '/hot/f?k=after']);
    is_deeply(\@st, [200], 'the next request answered');
    ok($s->wait_redis_connected($from, $SETTLE), 'the worker connected');
    unlike(substr($s->error_log, $from), qr/exited on signal|\[alert\]/,
           'no crash, no alert');
};

# A second reload while they wait: the first new worker drains, and
# worker_shutdown_timeout ends its requests; their commands, never
# written, go with them (their timers too: the worker exits then, not
# after linegate_redis_command_timeout)
subtest 'requests ended while they wait' => sub {
    my $from = reload_held();
    my ($pid) = substr($s->error_log, $from)
        =~ /start worker process (\d+)/;
    ok($pid, 'the waiting worker: ' . ($pid // '?')) or return;
    my $ended = sub {
        substr($s->error_log, $from) =~ /^\S+ \S+ \[notice\] $pid#$pid: exit$/m
    };
    my ($early, @st) = statuses(1, sub {
        my ($all) = @_;
        kill 'HUP', $s->{pids}{nginx};
        run_until(sub { $all->() && $ended->() }, $SETTLE);
    }, map { [{}, "/hot/f?k=ended$_"] } 1 .. 4);
    is_deeply(\@st, [('closed') x 4], 'ended unanswered (not 503 at once)')
        or diag("statuses: @st");
    ok($ended->(), 'the draining worker exited');
    ok($s->wait_redis_connected($from, $SETTLE), 'the next one connected');
    unlike(substr($s->error_log, $from), qr/exited on signal|\[alert\]/,
           'no crash, no alert');
};

$fake->stop;

done_testing;
