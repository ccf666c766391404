# Redis Sentinel: +switch-master that comes late. A worker that lost the
# old master (or was answered -READONLY there) asks the sentinels and
# reaches the new master on its own; the announcement of that failover,
# come afterwards, names the master it is on already. That connection is
# kept: dropping it ("master changed") would fail every command in
# flight on it, 503s right after the failover for nothing. A message
# naming another address (or the same one written otherwise: a name
# for the IP) is acted on as before (dropped, the sentinels asked
# again), and so is one whose address cannot be read, which must not
# crash the worker either: it is a peer's.
#
# The worker's subscription is on the test's own sentinel, first in the
# list (LG::FakeSentinel): it names the master the test says (the master
# of the stack by default) and publishes on +switch-master what the test
# gives it, when the test says so.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time sleep);
use Redis;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::FakeSentinel;

# the longest wait for a step of a failover to be seen (seconds)
my $SETTLE = 30;

my $fake = LG::FakeSentinel->new;
my $fake_port = $fake->port;
my ($gone) = LG::Stack::_free_ports(1);

# one worker: its log lines are the story
my $s = LG::Stack->new(redis => 'sentinel', stub => 0, WORKERS => 1,
                       REDIS_KEEPALIVE => '500ms',
                       first_sentinel => $fake_port)->start;

ok($s->wait_sentinels_ready($SETTLE), 'the sentinels know each other and '
   . 'both replicas');

my $master = $s->redis_port;
$fake->start(master => $master, subscribe => 1);

# a new worker, which asks the sentinels from the first: ours
my $from = length $s->error_log;
kill 'HUP', $s->{pids}{nginx};
ok($s->wait_redis_connected($from, 15), 'the worker connected to the '
   . 'master') or BAIL_OUT('no worker on the master');
ok(eventually(sub {
       substr($s->error_log, $from)
           =~ /redis sentinel 127\.0\.0\.1:$fake_port: subscribed to/
   }, 10), 'subscribed on the test\'s sentinel')
    or BAIL_OUT('not subscribed where the test can publish');

# $msg published; the error log after it, once the worker has acted on
# it (dropped or kept the connection) and, when it dropped it, is on a
# master again
sub announce {
    my ($msg) = @_;
    my $mark = length $s->error_log;
    $fake->publish($msg);
    my $done = eventually(sub {
        my $log = substr $s->error_log, $mark;
        $log =~ /connection kept/
            || $log =~ /master changed.*redis connected to the master/s
    }, $SETTLE);
    ok($done, "\"$msg\" acted on");
    return substr $s->error_log, $mark;
}

subtest 'late +switch-master naming the master the worker is on' => sub {
    my $log = announce("lgmaster 127.0.0.1 $gone 127.0.0.1 $master");
    like($log, qr/\+switch-master lgmaster /, 'heard');
    unlike($log, qr/master changed/, 'the connection is not dropped');
    unlike($log, qr/redis connected to the master/, 'nor made again');
    like($log, qr/redis already on the master 127\.0\.0\.1:$master /,
         'kept, and said so');
};

subtest '+switch-master naming another address: asked again' => sub {
    for my $to ("127.0.0.1 $gone", "localhost $master") {
        my $log = announce("lgmaster 127.0.0.1 $master $to");
        like($log, qr/redis master changed, reconnecting/,
             "to $to: the connection dropped");
        like($log, qr/redis sentinel 127\.0\.0\.1:$fake_port: master/,
             'the announcing sentinel asked first');
        like($log, qr/redis connected to the master 127\.0\.0\.1:$master\b/,
             'back on the master it names');
    }
};

subtest '+switch-master without an address to read: asked again' => sub {
    for my $msg ("lgmaster ", "lgmaster 127.0.0.1 $gone 127.0.0.1",
                 "lgmaster 127.0.0.1 $gone 127.0.0.1 $master x",
                 "lgmaster 127.0.0.1 $gone 127.0.0.1 99999",
                 "lgmaster 127.0.0.1 $gone 127.0.0.1 -1",
                 "lgmaster 127.0.0.1 $gone  127.0.0.1 $master",
                 "lgmaster 127.0.0.1 $gone " . ('1' x 300) . " $master")
    {
        my $log = announce($msg);
        like($log, qr/\+switch-master gives no new master's address/,
             'not read');
        like($log, qr/master changed/, 'the connection dropped, as any '
             . 'failover');
    }
};

# The failover the message is late for: the worker, cut off from the
# old master, finds the new one before the announcement reaches it.
#
# The test's sentinel names what the sentinel running the failover
# names, asked at each query, so that whenever the worker leaves the old
# master it is sent to the new one by the test's sentinel, and keeps its
# subscription there: cut off by the test below, or by the sentinels,
# which make the old master a replica and kill its clients some seconds
# after the switch, perhaps before the test has seen the new master
# (-READONLY would send it to the sentinels too). Before, the test named
# the new master itself once it had seen it: a worker that left first
# was named the old master again, refused it (ROLE), reached the new one
# through a real sentinel and moved its subscription there, and the
# announcement below, made on the test's sentinel, reached no one.
subtest 'a failover announced after the worker moved' => sub {
    my $leader = ($s->sentinel_ports)[1];
    $fake->follow($leader);
    my $mark = length $s->error_log;
    is($s->sentinel_failover($SETTLE, $leader), 'OK',
       'SENTINEL FAILOVER (the test\'s sentinel announces nothing)')
        or return;
    my $new = $s->wait_new_master($master, $SETTLE);
    ok(defined $new, 'a new master (port ' . ($new // '-') . ')') or return;
    # the worker's connection to the old master closed, if it is still
    # there (the old master is still one, or a replica by now)
    my $r = Redis->new(server => "127.0.0.1:$master", reconnect => 0);
    $r->client_kill('TYPE', 'normal');
    $r->quit;
    ok(eventually(sub {
           substr($s->error_log, $mark)
               =~ /redis connected to the master 127\.0\.0\.1:$new\b/
       }, $SETTLE), 'the worker on the new master') or return;
    unlike(substr($s->error_log, $mark), qr/subscription moved to/,
           'its subscription still on the test\'s sentinel');

    my $log = announce("lgmaster 127.0.0.1 $master 127.0.0.1 $new");
    unlike($log, qr/master changed/, 'the connection is not dropped');
    like($log, qr/redis already on the master 127\.0\.0\.1:$new /,
         'kept');
    $s->follow_master;
};

$fake->stop;

done_testing;
