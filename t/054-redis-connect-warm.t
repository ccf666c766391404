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
use IO::Select;
use Time::HiRes qw(time sleep);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually public_dir);
use LG::Lines;
use LG::Limit qw(hot_location_conf);
use LG::FakeSentinel;
use LG::StallProxy;
use LG::Warm qw(reload_held statuses run_until hung_port);

my $SETTLE = 30;
my $N = 6;

my ($http, $server) = hot_location_conf(public_dir('file.txt' => "ok\n"));

my $fake = LG::FakeSentinel->new;
my $fake_port = $fake->port;
my $release = sub { $fake->release };

my $s = LG::Stack->new(redis => 'sentinel', WORKERS => 1,
                       REDIS_COMMAND_TIMEOUT => '15s',
                       WORKER_CONNECTIONS => 2048,
                       MAIN_EXTRA => 'worker_shutdown_timeout 1s;',
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server,
                       first_sentinel => $fake_port)->start;
my $l = LG::Lines->new($s);

ok($s->wait_sentinels_ready($SETTLE), 'the sentinels know each other and '
   . 'both replicas');
$fake->start(master => $s->redis_port);
my $w = $l->workspace('org_warm', plan => 'growth');

my @reqs = ((map { [{}, "/hot/f?k=warm$_"] } 1 .. $N),
            (map { [$w->{auth}, '/api/lines/by-user'] } 1 .. $N));

subtest 'requests in a new worker wait for its first connection' => sub {
    my $from = reload_held($s, $fake, master => $s->redis_port);
    my ($early, @st) = statuses($s, $release, 3, undef, @reqs);
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 (not '
              . '503) once the connection is made')
        or diag("statuses: @st; $early answered before the release");
    ok($s->wait_redis_connected($from, $SETTLE), 'the worker connected');
    unlike(substr($s->error_log, $from), qr/redis not connected/,
           'no request found it not connected');
};

subtest 'a request whose client left while it waited' => sub {
    my $from = reload_held($s, $fake, master => $s->redis_port);
    my @c = map {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $s->{port})
            or die "connect: $!";
        print $c "GET $_ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        $c;
    } '/hot/f?k=gone', '/hot/f?k=gone2';
    sleep 0.3;    # (not a timing assertion: read below either way)
    close $_ for @c;
    my ($early, @st) = statuses($s, $release, 1, undef,
                                [{}, '/hot/f?k=after']);
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
    my $from = reload_held($s, $fake, master => $s->redis_port);
    my ($pid) = substr($s->error_log, $from)
        =~ /start worker process (\d+)/;
    ok($pid, 'the waiting worker: ' . ($pid // '?')) or return;
    my $ended = sub {
        substr($s->error_log, $from) =~ /^\S+ \S+ \[notice\] $pid#$pid: exit$/m
    };
    my ($early, @st) = statuses($s, $release, 1, sub {
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

# The sentinel asked first names a master that cannot be reached (stale,
# cut off from the others): the next sentinel names the real one, and the
# requests that waited are served (before 2026-11-29 the first connect
# that failed ended the wait: every one answered 503)
subtest 'a master named that refuses: the next sentinel asked' => sub {
    my $dead = (LG::Stack::_free_ports(1))[0];
    my $from = reload_held($s, $fake, master => $dead);
    my ($early, @st) = statuses($s, $release, 1, undef, @reqs);
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 once the '
              . 'next sentinel named the master')
        or diag("statuses: @st; $early answered before the release");
    ok($s->wait_redis_connected($from, $SETTLE), 'the worker connected');
    like(substr($s->error_log, $from), qr/127\.0\.0\.1:$dead connect failed/,
         'the master named first refused');
};

# The sentinel asked first takes the query and never answers (a hung
# host), never released: the next sentinel is asked within the requests'
# wait, and they are served (before 2026-11-29 the query had the connect
# and command timeouts, longer than the wait: every one answered 503)
subtest 'the sentinel asked first never answers: the next one asked' => sub {
    my $from = reload_held($s, $fake, master => $s->redis_port);
    my ($early, @st) = statuses($s, sub { }, 1, undef, @reqs);
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 once the '
              . 'next sentinel named the master')
        or diag("statuses: @st; $early answered early");
    like(substr($s->error_log, $from),
         qr/127\.0\.0\.1:$fake_port: no master "[^"]+": timed out/,
         'the sentinel that never answered given up');
};

# The sentinel asked first names a master that takes no connection (its
# SYNs dropped), or takes it and never answers ROLE (LG::StallProxy,
# held, in front of the real master: a master stopped or hung), with a
# connect timeout longer than the requests' wait: given up within a
# third of the command timeout, as a sentinel's query is, the next
# sentinel is asked while they still wait, and they are served (before
# 2026-11-29 the connect had linegate_redis_connect_timeout, ROLE the
# whole command timeout: every one answered 503, "not connected within
# linegate_redis_command_timeout")
subtest 'a master named whose connect hangs: the next sentinel asked' => sub {
    my ($H, $held) = hung_port();
    plan skip_all => 'a full listen queue does not drop SYNs here'
        unless $H;
    $s->write_conf(REDIS_CONNECT_TIMEOUT => '30s');
    my $from = reload_held($s, $fake, master => $H);
    my ($early, @st) = statuses($s, $release, 1, undef, @reqs);
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 once the '
              . 'next sentinel named the master')
        or diag("statuses: @st; $early answered before the release");
    my $log = substr($s->error_log, $from);
    like($log, qr/redis connect timed out/, 'the hung master given up');
    unlike($log, qr/not connected within linegate_redis_command_timeout/,
           'no request waited out its command timeout');
    $s->write_conf;
    close $_ for @$held;
};

subtest 'a master named that never answers ROLE: the next sentinel asked'
    => sub {
    my $proxy = LG::StallProxy->new;
    $proxy->to($s->redis_port);
    $proxy->start(hold => 1);
    my $P = $proxy->port;
    $s->write_conf(REDIS_CONNECT_TIMEOUT => '30s');
    my $from = reload_held($s, $fake, master => $P);
    my ($early, @st) = statuses($s, $release, 1, undef, @reqs);
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 once the '
              . 'next sentinel named the master')
        or diag("statuses: @st; $early answered before the release");
    my $log = substr($s->error_log, $from);
    like($log, qr/redis connected to the master 127\.0\.0\.1:\d+/,
         'the worker on a master');
    unlike($log, qr/redis connected to the master 127\.0\.0\.1:$P\b/,
           'not through the proxy that holds ROLE');
    unlike($log, qr/not connected within linegate_redis_command_timeout/,
           'no request waited out its command timeout');
    $s->write_conf;
    $proxy->stop;
};

# a request for each path, each on a connection of its own (Connection:
# close), written at once
sub raw_requests {
    my (@paths) = @_;
    return map {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $s->{port})
            or die "connect: $!";
        $c->blocking(0);
        syswrite $c, "GET $_ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        $c;
    } @paths;
}

# the status of each answer complete (its connection closed) within
# $secs s, keyed by socket; the sockets answered leave @$socks
sub raw_answers {
    my ($socks, $secs, $want) = @_;
    my (%buf, %status);
    my $sel = IO::Select->new(@$socks);
    my $until = time + $secs;
    while ($sel->count && time < $until && keys %status < $want) {
        for my $c ($sel->can_read(0.1)) {
            my $n = sysread $c, my $chunk, 4096;
            next if !defined $n;    # (EAGAIN)
            if ($n) {
                $buf{$c} .= $chunk;
                next;
            }
            $sel->remove($c);
            ($status{$c}) = ($buf{$c} // '') =~ m{^HTTP/1\.\d (\d{3})};
            $status{$c} //= 'none';
            close $c;
        }
    }
    @$socks = grep { !exists $status{$_} } @$socks;
    return values %status;
}

# At most 1024 commands wait per worker: past that a request is answered
# at once as when Redis is down (linegate_limit_on_error closed: 503);
# the 1024 are served once the connection is up, and nothing is left
# behind
subtest 'past 1024 waiting commands: answered at once' => sub {
    my $over = 40;
    my $from = reload_held($s, $fake, master => $s->redis_port);
    my @socks = raw_requests(map { "/hot/f?k=bound$_" } 1 .. 1024 + $over);
    my @early = raw_answers(\@socks, 10, $over);
    is(scalar(@early), $over, "$over answered before the connection");
    is_deeply([sort @early], [('503') x @early], 'each 503')
        or diag("early: @early");
    sleep 0.5;    # (not a timing assertion: counted again below)
    is(scalar(raw_answers(\@socks, 0.5, 1)), 0, 'no more meanwhile');
    $fake->release;
    my $waited = @socks;
    my @late = raw_answers(\@socks, $SETTLE, $waited);
    is($waited, 1024, '1024 waited');
    is(scalar(grep { $_ eq '200' } @late), 1024,
       'all 1024 answered 200 once connected');
    close $_ for @socks;
    like(substr($s->error_log, $from),
         qr/not connected yet, and 1024 commands wait for it already/,
         'logged once');
    my ($early, @st) = statuses($s, $release, 1, undef,
                                [{}, '/hot/f?k=bound-after']);
    is_deeply(\@st, [200], 'a request after them answered');
    unlike(substr($s->error_log, $from), qr/exited on signal|\[alert\]/,
           'no crash, no alert');
};

$fake->stop;

done_testing;
