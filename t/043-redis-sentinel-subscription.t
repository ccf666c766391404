# Redis Sentinel: where a worker hears of a failover. Each worker keeps
# one connection subscribed to +switch-master on one sentinel. When that
# sentinel dies, the next keepalive subscribes on the next sentinel of
# the list (round robin), not on the dead one again: a failover the
# others run is still pushed, and the workers move at once, the old
# master still up and writable. A durable write answered -READONLY (the
# master demoted under a worker that makes no other write) sends the
# worker to the sentinels, as a request's -READONLY does. A sentinel that
# hangs (SIGSTOP: its connections stay open) loses the subscription too:
# the keepalive's PING on it goes unanswered.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time sleep);
use Mojo::IOLoop;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

# the longest wait for a step of a failover to be seen (seconds)
my $SETTLE = 30;

my $s = LG::Stack->new(redis => 'sentinel', REDIS_KEEPALIVE => '500ms',
                       STRIPE_TIMEOUT => '5s',
                       MAIN_EXTRA => 'worker_shutdown_timeout 500ms;')
            ->start;

ok($s->wait_sentinels_ready($SETTLE), 'the sentinels know each other and '
   . 'both replicas');

# the workers' subscriptions on each sentinel of @ports (a sentinel has
# no subscriber of its own: the sentinels' hellos go through the Redis
# servers), by port
sub subscribers {
    my (@ports) = @_;
    my %n;
    for my $port (@ports) {
        $n{$port} = 0;
        my $r = eval {
            Redis->new(server => "127.0.0.1:$port", cnx_timeout => 1,
                       read_timeout => 2, reconnect => 0)
        } or next;
        my $list = eval { $r->client_list('TYPE', 'pubsub') } // '';
        $r->quit;
        # PSUBSCRIBE (a module before it: SUBSCRIBE)
        $n{$port} = grep { /\b(?:p?sub)=1\b/ } split /\n/, $list;
    }
    return \%n;
}

sub sum { my $n = 0; $n += $_ for values %{ $_[0] }; return $n }

sub workers_on { return $s->workers_on_master(@_) }

my ($dead, @live);

subtest 'the subscription leaves a dead sentinel for the next' => sub {
    my $n;
    ok(eventually(sub { sum($n = subscribers($s->sentinel_ports)) == 2 },
                  10),
       'both workers subscribed') or diag(explain($n));

    # the sentinel with the most subscribers (each worker's is the one
    # that named the master to it: the first of the list, both)
    ($dead) = sort { $n->{$b} <=> $n->{$a} } keys %$n;
    @live = grep { $_ != $dead } $s->sentinel_ports;
    my $moving = $n->{$dead};

    my $mark = length $s->error_log;
    my $pid = delete $s->{pids}{"sentinel_$dead"};
    ok($pid, "the sentinel on $dead ($moving subscribers)") or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;

    # a few keepalives (500 ms): subscribed again, on sentinels up
    my $t0 = time;
    ok(eventually(sub { sum($n = subscribers(@live)) == 2 }, 10),
       sprintf('the sentinels still up have both workers (%.1f s)',
               time - $t0))
        or diag(explain($n));
    my $lost = qr/no \+switch-master subscription: .*; next tried:/;
    like(substr($s->error_log, $mark),
         qr/redis sentinel 127\.0\.0\.1:$dead: $lost 127\.0\.0\.1:\d+/,
         'the log names the sentinel lost and the next');
    my $up = join '|', @live;
    like(substr($s->error_log, $mark),
         qr/redis sentinel 127\.0\.0\.1:(?:$up): subscribed to \+switch/,
         'and the subscription made there');
};

subtest 'a failover is pushed by the sentinels still up' => sub {
    ok(@live == 2, 'a sentinel was killed') or return;
    my $old = $s->redis_port;
    my $mark = length $s->error_log;

    # asked again while the sentinels still see the dead one as up
    # (INPROG) or no replica to promote yet (NOGOODSLAVE)
    is($s->sentinel_failover($SETTLE, $live[0]), 'OK', 'SENTINEL FAILOVER');
    my $t0 = time;

    my $new = $s->wait_new_master($old, $SETTLE);
    ok(defined $new, 'a new master (port ' . ($new // '-') . ')') or return;

    # the old master is made a replica (and its clients killed) only
    # seconds after the switch: a worker not told stays on it meanwhile
    my $secs = workers_on($new, $mark, $SETTLE);
    ok(defined $secs && time - $t0 < 5,
       'both workers on the new master within 5 s of the failover'
       . (defined $secs ? sprintf(' (%.2f s)', time - $t0) : ''));
    my $log = substr $s->error_log, $mark;
    my $told = () = $log =~ /redis sentinel: \+switch-master lgmaster /g;
    is($told, 2, 'both told by +switch-master');
    like($log, qr/redis master changed, reconnecting/,
         'and left the old master for it');
    unlike($log, qr/READONLY/, 'no write needed a -READONLY to move');
    $s->follow_master;
};

# A durable write with no request around it: a creation ended by a
# reload (worker_shutdown_timeout) while Stripe adds its item hands its
# release to the draining worker's durable writes (t/156). The master is
# demoted before: the release is the first write it refuses.
subtest 'a durable write answered READONLY asks the sentinels' => sub {
    # the port of the sentinel killed: nothing listens there
    ok($dead, 'a port to replicate from in vain') or return;
    ok(eventually(sub { $s->_replicas_in_sync(1) }, $SETTLE),
       'a replica in sync') or return;
    $s->follow_master;
    my $r = $s->redis;
    my $l = LG::Lines->new($s);
    my $w;
    for (1 .. 40) {
        $w = eval { $l->workspace('org_readonly') } and last;
        sleep 0.5;
    }
    ok($w, 'a workspace') or return;
    $l->fault(path_prefix => '/v1/invoiceitems', latency_ms => 3000);

    my $ua = $s->ua;
    my ($mark, $t0, $reloaded);
    my $pr = $ua->start_p($ua->build_tx(POST => $s->url('/api/line-requests')
                          => $w->{auth} => json => body(channelType => 'email',
                                                 email => 'ro@example.com')))
        ->catch(sub { });
    my $until = time + 8;
    my $id = Mojo::IOLoop->recurring(0.01 => sub {
        return if $reloaded || time > $until;
        return unless $l->pending($w);
        # the master becomes a replica (of a port nothing listens on),
        # its clients kept, the sentinels not told: only its -READONLY
        # says so
        $mark = length $s->error_log;
        $r->replicaof('127.0.0.1', $dead);
        kill 'HUP', $s->{pids}{nginx};
        $t0 = time;
        $reloaded = 1;
    });
    $pr->wait;
    Mojo::IOLoop->remove($id);
    ok($reloaded, 'demoted, then reloaded while Stripe worked') or return;

    # the draining worker's durable release, refused; then that worker
    # (the new ones, sent to the demoted master by the sentinels, leave
    # it too, told by ROLE)
    my $rel = qr/durable write "lr_release of an ended request"/;
    my ($pid, $at);
    ok(eventually(sub {
           substr($s->error_log, $mark)
               =~ /(\d+)#\d+: [^\n]*$rel not answered \(attempt \d+: READONLY/
               or return 0;
           ($pid, $at) = ($1, $mark + $+[0]);
       }, 10), 'the durable release answered -READONLY');
    ok($pid && eventually(sub {
           substr($s->error_log, $at)
               =~ /\b$pid#\d+: [^\n]*redis master changed, reconnecting/
       }, 10),
       sprintf('and its worker left the demoted master (%.1f s after the '
               . 'reload)', time - $t0));

    # the master again: the release lands there
    my $back = length $s->error_log;
    $r->replicaof('NO', 'ONE');
    ok(eventually(sub { substr($s->error_log, $mark) =~ /$rel done/ },
                  $SETTLE),
       'the release done on the master again');
    ok(eventually(sub { !defined $l->pending($w) }, $SETTLE),
       'the reservation is released');
    $l->clear_faults;

    # the reload's workers on the master again: their subscriptions moved
    # by then to the sentinel that named it (they followed no answer that
    # named the demoted master), where the next subtest finds them
    my @pids = substr($s->error_log, $mark) =~ /start worker process (\d+)/g;
    ok(@pids && eventually(sub {
           my $log = substr $s->error_log, $back;
           !grep { $log !~ /\b$_#\d+: [^\n]*redis connected to the master/ }
               @pids
       }, $SETTLE), "the new workers (@pids) on the master again");
};

# Last: a sentinel stopped for seconds sees the time jump (TILT, 30 s
# without acting), which a failover above would wait for. Its kernel
# still completes handshakes and answers TCP keepalive probes, so its
# subscribed connections are never closed; only their PINGs go
# unanswered.
subtest 'the subscription leaves a sentinel that hangs' => sub {
    my @up = grep { $s->{pids}{"sentinel_$_"} } $s->sentinel_ports;
    ok(@up >= 2, 'two sentinels up') or return;
    my $n;
    ok(eventually(sub { sum($n = subscribers(@up)) == 2 }, 10),
       'both workers subscribed') or return diag(explain($n));

    my ($hung) = sort { $n->{$b} <=> $n->{$a} } keys %$n;
    my @others = grep { $_ != $hung } @up;
    my $moving = $n->{$hung};
    my $pid = $s->{pids}{"sentinel_$hung"};
    my $mark = length $s->error_log;

    # SIGCONT however the subtest ends (a failure, a die)
    kill 'STOP', $pid;
    my $cont = LG::Cont->new($pid);

    my $t0 = time;
    ok(eventually(sub { sum($n = subscribers(@others)) == 2 }, 10),
       sprintf("the sentinel on $hung stopped ($moving subscribers): "
               . 'the others have both workers (%.1f s)', time - $t0))
        or diag(explain($n));
    my $lost = qr/no \+switch-master subscription: PING unanswered;/;
    like(substr($s->error_log, $mark),
         qr/redis sentinel 127\.0\.0\.1:$hung: $lost next tried:/,
         'the log names the PING unanswered');

    undef $cont;
    ok(eventually(sub { subscribers($hung)->{$hung} == 0 }, 10),
       'continued, it has no subscriber left (the connections closed)');
};

done_testing;


package LG::Cont;

sub new { my ($class, $pid) = @_; return bless { pid => $pid }, $class }

sub DESTROY { kill 'CONT', $_[0]{pid} }
