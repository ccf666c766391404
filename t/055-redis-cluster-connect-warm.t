# A new worker's first connection to a Redis Cluster: its seeds
# connected, then the first slot map (CLUSTER SLOTS, asked of the seeds
# up in turn). A request that comes before the map is known waits for it
# (within linegate_redis_command_timeout) rather than be answered as if
# Redis were down, and a seed that fails the map does not end the wait
# while another seed is up and not asked yet.
#
# The window is made as long as the test needs with the test's own seed
# (LG::StallProxy, first in the list, in front of a master), which keeps
# the new worker's CLUSTER SLOTS back until released: relayed then, or
# its connection closed. Before a reload it refuses connections, so the
# worker running then left it alone (a seed serving no slot).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test qw(:DEFAULT public_dir);
use LG::Limit qw(hot_location_conf);
use LG::StallProxy;
use LG::Warm qw(reload_held statuses);

my $SETTLE = 30;
my $N = 8;

my ($http, $server) = hot_location_conf(public_dir('file.txt' => "ok\n"));

my $proxy = LG::StallProxy->new;

my $s = LG::Stack->new(redis => 'cluster', stub => 0, api => 0,
                       WORKERS => 1, REDIS_COMMAND_TIMEOUT => '15s',
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server,
                       first_seed => $proxy->port)->start;
$proxy->to(($s->cluster_ports)[0]);

# keys on every master: each has its own slot
my @reqs = map { [{}, "/hot/f?k=warm$_"] } 1 .. $N;

subtest 'requests before the first slot map wait for it' => sub {
    my $from = reload_held($s, $proxy);
    my ($early, @st) = statuses($s, sub { $proxy->release }, 1, undef,
                                @reqs);
    is($early, 0, 'none answered while the map was kept back');
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 once the '
              . 'map came') or diag("statuses: @st");
    unlike(substr($s->error_log, $from), qr/not connected|\[alert\]/,
           'no request found its slot not connected');
};

# The seed asked first closes its connection instead of answering: the
# next seed up is asked, and the requests that waited are served (before
# 2026-11-29 the first CLUSTER SLOTS that failed ended the wait: every
# one answered 503)
subtest 'the seed asked first fails: the next one asked' => sub {
    my $from = reload_held($s, $proxy);
    my ($early, @st) = statuses($s, sub { $proxy->release('close') }, 1,
                                undef, @reqs);
    is($early, 0, 'none answered while the map was kept back');
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 once '
              . 'another seed gave the map') or diag("statuses: @st");
    my ($early2, @after) = statuses($s, sub { }, 1, undef,
                                    [{}, '/hot/f?k=after']);
    is_deeply(\@after, [200], 'a request after them answered');
    unlike(substr($s->error_log, $from), qr/exited on signal|\[alert\]/,
           'no crash, no alert');
};

# The seed asked first takes CLUSTER SLOTS and never answers (a hung
# host: its connection stays up), for longer than the requests wait: its
# PINGs go unanswered too, so the keepalive is made longer than that.
# The next seed is asked at CLUSTER SLOTS's own deadline, and the
# requests that waited are served (before 2026-11-29 nothing else was
# asked until the keepalive dropped that seed: every one answered 503)
subtest 'the seed asked first never answers: the next one asked' => sub {
    $s->write_conf(REDIS_KEEPALIVE => '60s');
    my $from = reload_held($s, $proxy);
    my ($early, @st) = statuses($s, sub { }, 1, undef, @reqs);
    is_deeply(\@st, [(200) x @reqs], 'every request answered 200 once '
              . 'another seed gave the map') or diag("statuses: @st");
    like(substr($s->error_log, $from), qr/CLUSTER SLOTS timed out/,
         'the seed that never answered given up');
    unlike(substr($s->error_log, $from), qr/exited on signal|\[alert\]/,
           'no crash, no alert');
};

$proxy->stop;

done_testing;
