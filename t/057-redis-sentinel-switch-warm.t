# Redis Sentinel: +switch-master during a worker's first connection
# (at start, after nginx -s reload), which requests wait for (t/054). A
# sentinel named a master, the worker is checking its ROLE, and the
# sentinel announces a failover to another: that master is left for
# the new one, and it is no miss of the sentinel's (the failover's, not
# a stale answer). The sentinels are asked again, the announcing one
# first, and the requests that waited are served from the new master.
# Before 2026-11-29 the switch counted as a miss: with one sentinel
# configured, as many misses as sentinels, the wait ended with no
# master and every request waiting was answered 503.
#
# The only sentinel nginx is given is the test's own (LG::FakeSentinel):
# it names a master that takes the connection and never answers (a
# listening socket never accepted), so the worker waits on its ROLE
# while the test publishes the failover to the stack's master.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually public_dir);
use LG::Limit qw(hot_location_conf);
use LG::FakeSentinel;
use LG::Warm qw(statuses);

my $SETTLE = 30;

my $fake = LG::FakeSentinel->new;
my $fake_port = $fake->port;

# the stack's master, named by our sentinel from the start
my ($master) = LG::Stack::_free_ports(1);
$fake->start(master => $master, subscribe => 1);

# /hot/ answers 200 only with Redis (linegate_limit_on_error closed). The
# first connection's ROLE is given a third of the command timeout: 15 s,
# for the test's steps between the ROLE sent and the switch published
# (since 2026-11-29, t/054; the whole command timeout before)
my ($http, $server) = hot_location_conf(public_dir('file.txt' => "ok\n"));
my $s = LG::Stack->new(redis => 'sentinel', stub => 0, WORKERS => 1,
                       redis_port => $master,
                       REDIS_COMMAND_TIMEOUT => '45s',
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server,
                       only_sentinel => $fake_port)->start;
ok($s->wait_redis_connected(0, $SETTLE), 'the worker on the master our '
   . 'sentinel names');

# a master that never answers: the kernel completes the handshake of a
# listening socket nobody accepts on, and ROLE waits (a third of the
# command timeout, during the first connection)
my ($mute_port) = LG::Stack::_free_ports(1);
my $mute = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                 LocalPort => $mute_port,
                                 Listen => 16, ReuseAddr => 1)
    or die "the mute master on $mute_port: $!";

subtest '+switch-master while the first connection checks ROLE' => sub {
    # (restarted: the old worker's subscription closed)
    $fake->start(master => $mute_port, subscribe => 1);
    my $from = length $s->error_log;
    kill 'HUP', $s->{pids}{nginx};
    my $pid;
    my $mine = sub {
        ($pid) = substr($s->error_log, $from)
            =~ /start worker process (\d+)/ unless $pid;
        return '' unless $pid;
        join '', grep { /\b$pid#/ } split /^/, substr $s->error_log, $from;
    };
    ok(eventually(sub {
           my $log = $mine->();
           $log =~ /master "lgmaster" is 127\.0\.0\.1:$mute_port\b/
               && $log =~ /127\.0\.0\.1:$fake_port: subscribed to/
               && substr($s->error_log, $from) =~ /gracefully shutting/
       }, $SETTLE), 'the new worker named the mute master, subscribed, '
       . 'the old one drains') or return;

    my @reqs = map { [{}, "/hot/f?k=switch$_"] } 1 .. 4;
    my ($early, @st) = statuses($s, sub {
        $fake->master($master);
        $fake->publish("lgmaster 127.0.0.1 $mute_port 127.0.0.1 $master");
    }, 1, undef, @reqs);
    is($early, 0, 'the requests wait for the first connection');
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 from '
              . 'the master announced (not 503: the switch is no miss)')
        or diag("statuses: @st");

    my $log = $mine->();
    like($log, qr/\+switch-master lgmaster /, 'told by +switch-master');
    like($log, qr/redis connected to the master 127\.0\.0\.1:$master\b/,
         'connected to the master announced');
    unlike($log, qr/redis not connected|no sentinel named/,
           'the wait never ended for want of a master');
};

$fake->stop;
close $mute;

done_testing;
