package LG::Warm;

# A new worker whose first connection is kept back by the test's own
# server (LG::FakeSentinel's query, LG::StallProxy's CLUSTER SLOTS), and
# requests sent meanwhile (t/054, t/055):
#
#   my $from = reload_held($s, $fake, @start);  # $fake->start(@start,
#                                               # hold => 1), nginx -s
#                                               # reload, the query held
#   my ($early, @status) = statuses($s, sub { $fake->release }, $wait,
#                                   $then, @reqs);
#   run_until($done, $secs);
#   my ($port, $held) = hung_port;   # a port whose connects hang (undef:
#                                    # the kernel here does not); closed
#                                    # with close $_ for @$held

use strict;
use warnings;

use Exporter 'import';
use Mojo::IOLoop;
use Mojo::Promise;
use Mojo::UserAgent;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time);
use LG::Stack;
use LG::Test qw(eventually);

our @EXPORT_OK = qw(reload_held statuses run_until hung_port);

my $SETTLE = 30;

# a new worker (nginx -s reload), whose first connection $fake keeps
# back: its connection is being made while the requests come
sub reload_held {
    my ($s, $fake, @start) = @_;
    $fake->start(@start, hold => 1);
    my $from = length $s->error_log;
    kill 'HUP', $s->{pids}{nginx};
    ok(eventually(sub { $fake->asked }, $SETTLE),
       'the new worker asks our server, kept back');
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

# @reqs ([headers, path] each) started, the answers that come within
# $wait s (all of them when the module answers at once), $then->($all)
# run if given (a sub that runs the loop until $all->() says every
# request ended), then $release->(): ($early, every status in order
# ('closed': none)), $early how many came before the release
sub statuses {
    my ($s, $release, $wait, $then, @reqs) = @_;
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
    $release->();
    Mojo::Promise->all_settled(@p)->wait if $answered < @reqs;
    return ($early, @status);
}

# A port whose connects hang: a listener that never accepts, its queue
# (a backlog of 1) filled by two connections of ours, so that the
# kernel drops the SYNs of any other: ($port, the sockets to close), or
# undef when the kernel here does not (t/054, t/056)
sub hung_port {
    my $port = (LG::Stack::_free_ports(1))[0];
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $port, Listen => 1,
                                  ReuseAddr => 1)
        or die "the hung port $port: $!";
    my @held = ($l);
    for (1 .. 2) {
        push @held, IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $port, Timeout => 2)
            // last;
    }
    my $probe = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Timeout => 2);
    return $probe ? undef : ($port, \@held);
}

1;
