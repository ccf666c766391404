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
# list: it names the master the file $ctl.master says (the master of
# the stack by default) and publishes on +switch-master whatever the
# test writes to $ctl.say, when the test says so.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time sleep);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Redis;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually take_command resp);

# the longest wait for a step of a failover to be seen (seconds)
my $SETTLE = 30;

my ($fake_port, $gone) = LG::Stack::_free_ports(2);
my $fake_pid;

sub slurp {
    open my $f, '<', $_[0] or return undef;
    local $/;
    return scalar <$f>;
}

# written whole (renamed into place): the sentinel never reads half
sub spew {
    my ($file, $text) = @_;
    open my $f, '>', "$file.tmp" or die "$file.tmp: $!";
    print $f $text;
    close $f;
    rename "$file.tmp", $file or die "$file: $!";
}

sub stop_fake {
    return unless $fake_pid;
    kill 'KILL', $fake_pid;
    waitpid $fake_pid, 0;
    undef $fake_pid;
}

# The test's sentinel: SENTINEL (get-master-addr-by-name) is answered
# 127.0.0.1 and the port in $ctl.master, PSUBSCRIBE and PING as a
# sentinel does; anything else closes the connection. $ctl.say, once
# there is a subscriber, is published to each and removed.
sub fake_sentinel {
    my ($ctl) = @_;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => $fake_port, Listen => 16,
                                    ReuseAddr => 1)
        or die "the fake sentinel on $fake_port: $!";
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $srv;
        $fake_pid = $pid;
        return;
    }
    $SIG{PIPE} = 'IGNORE';
    my $sel = IO::Select->new($srv);
    my (%buf, %sub);
    while (1) {
        my $say = %sub ? slurp("$ctl.say") : undef;
        if (defined $say) {
            unlink "$ctl.say";
            syswrite $_, resp('pmessage', '+switch-master', '+switch-master',
                              $say) for values %sub;
        }
        for my $fh ($sel->can_read(0.05)) {
            if ($fh == $srv) {
                my $c = $srv->accept or next;
                $sel->add($c);
                next;
            }
            my $n = sysread $fh, my $chunk, 4096;
            my $open = $n;
            $buf{$fh} .= $chunk if $n;
            while ($open && (my @cmd = take_command(\$buf{$fh}))) {
                my $c = uc $cmd[0];
                if ($c eq 'SENTINEL') {
                    syswrite $fh, resp('127.0.0.1', slurp("$ctl.master"));
                } elsif ($c eq 'PSUBSCRIBE' && @cmd == 2) {
                    $sub{$fh} = $fh;
                    syswrite $fh, "*3\r\n\$10\r\npsubscribe\r\n\$"
                        . length($cmd[1]) . "\r\n$cmd[1]\r\n:1\r\n";
                } elsif ($c eq 'PING' && $sub{$fh}) {
                    syswrite $fh, resp('pong', $cmd[1] // '');
                } else {
                    $open = 0;
                }
            }
            next if $open;
            $sel->remove($fh);
            delete $buf{$fh};
            delete $sub{$fh};
            close $fh;
        }
    }
    POSIX::_exit(0);
}

END {
    local $?;
    stop_fake();
}

# one worker: its log lines are the story
my $s = LG::Stack->new(redis => 'sentinel', stub => 0, WORKERS => 1,
                       REDIS_KEEPALIVE => '500ms',
                       first_sentinel => $fake_port)->start;
my $ctl = $s->prefix . '/fake-sentinel';

ok($s->wait_sentinels_ready($SETTLE), 'the sentinels know each other and '
   . 'both replicas');

my $master = $s->redis_port;
spew("$ctl.master", $master);
fake_sentinel($ctl);

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
    spew("$ctl.say", $msg);
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
# old master, finds the new one before the announcement reaches it
subtest 'a failover announced after the worker moved' => sub {
    # (the worker may leave the old master on its own, -READONLY)
    my $mark = length $s->error_log;
    is($s->sentinel_failover($SETTLE, ($s->sentinel_ports)[1]), 'OK',
       'SENTINEL FAILOVER (the test\'s sentinel announces nothing)')
        or return;
    my $new = $s->wait_new_master($master, $SETTLE);
    ok(defined $new, 'a new master (port ' . ($new // '-') . ')') or return;
    spew("$ctl.master", $new);
    # the old master, a replica by now, closes the worker's connection
    my $r = Redis->new(server => "127.0.0.1:$master", reconnect => 0);
    $r->client_kill('TYPE', 'normal');
    $r->quit;
    ok(eventually(sub {
           substr($s->error_log, $mark)
               =~ /redis connected to the master 127\.0\.0\.1:$new\b/
       }, $SETTLE), 'the worker on the new master') or return;

    my $log = announce("lgmaster 127.0.0.1 $master 127.0.0.1 $new");
    unlike($log, qr/master changed/, 'the connection is not dropped');
    like($log, qr/redis already on the master 127\.0\.0\.1:$new /,
         'kept');
    $s->follow_master;
};

stop_fake();

done_testing;
