# A Redis Cluster node that hangs, as a worker's first connection meets
# it and after (t/055 has the first map's wait itself):
#
# * a seed that takes CLUSTER SLOTS and never answers (LG::StallProxy,
#   held, first in the seeds; the keepalive made long enough to keep it)
#   is given up once, then asked last: the refreshes that follow go to
#   the nodes that answer (before 2026-11-29 it kept its turn, and each
#   refresh that came to it waited a whole command timeout), and the
#   CLUSTER NODES written with its CLUSTER SLOTS is asked again of
#   another node (before, none was until the keepalive dropped it: the
#   worker's subscribers had no masters to subscribe on);
# * a master of the map whose connect hangs (its SYNs dropped: a port
#   whose listener never accepts, its queue full, that the master
#   announces) is given up within the wait of the requests for its
#   slots, after a third of linegate_redis_command_timeout, rather than
#   linegate_redis_connect_timeout (made longer than the wait here:
#   before 2026-11-29 they waited out their command timeout); the
#   other slots are served.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test qw(:DEFAULT public_dir eventually);
use LG::Limit qw(hot_location_conf rl_key);
use LG::StallProxy;
use LG::Warm qw(reload_held statuses hung_port);

my $SETTLE = 30;

my ($http, $server) = hot_location_conf(public_dir('file.txt' => "ok\n"));

my $proxy = LG::StallProxy->new;

# with the Lines API and the pushed time, the map (and CLUSTER NODES) is
# asked for every 500 ms: a node's turn comes within seconds
my $s = LG::Stack->new(redis => 'cluster', stub => 0, WORKERS => 1,
                       REDIS_COMMAND_TIMEOUT => '3s',
                       REDIS_KEEPALIVE => '60s',
                       HTTP_EXTRA => "linegate_api_key_cache 500ms 30s;\n"
                                     . $http,
                       SERVER_EXTRA => $server,
                       first_seed => $proxy->port)->start;
$proxy->to(($s->cluster_ports)[0]);

my $P = $proxy->port;

# the pid of the worker whose first map came after $from
sub new_worker {
    my ($from) = @_;
    my $pid;
    eventually(sub {
        ($pid) = substr($s->error_log, $from)
                 =~ /(\d+)#\d+: linegate: redis cluster: \d+ slot/;
        defined $pid
    }, $SETTLE);
    return $pid;
}

subtest 'a seed that stalled is asked last' => sub {
    my $from = reload_held($s, $proxy);
    # never released: the next seed gives the map
    my ($early, @st) = statuses($s, sub { }, 1, undef,
                                map { [{}, "/hot/f?k=stall$_"] } 1 .. 4);
    is_deeply(\@st, [(200) x 4], 'the requests that waited are served')
        or diag("statuses: @st");
    my $pid = new_worker($from);
    ok($pid, 'the new worker has its map');

    # four nodes (the proxy and the three masters), one every 500 ms:
    # the proxy's turn would come within 2 s, its timeout 3 s later
    sleep 10;
    my $log = substr($s->error_log, $from);
    my @out = $log =~ /redis 127\.0\.0\.1:$P: CLUSTER SLOTS timed out/g;
    is(scalar @out, 1, 'given up once, not asked again')
        or diag("timed out ${\ scalar @out} times");
    like($log, qr/$pid#\d+: .*redis subscriber subscribed at/,
         'CLUSTER NODES asked of another node: the subscribers are on');
    my ($e2, @after) = statuses($s, sub { }, 1, undef,
                                [{}, '/hot/f?k=stall-after']);
    is_deeply(\@after, [200], 'a request after them answered');
    unlike($log, qr/exited on signal|\[alert\]/, 'no crash, no alert');
};

subtest 'a master whose connect hangs is given up within the wait' => sub {
    my ($H, $held) = hung_port();
    plan skip_all => 'a full listen queue does not drop SYNs here'
        unless $H;

    my @masters = $s->cluster_masters;
    my $x = $masters[1];
    # the requests' keys (the limit's), two on X and three elsewhere
    my (@on_x, @other);
    for my $i (1 .. 200) {
        my $m = $s->cluster_master_of(rl_key('hot', "hang$i"));
        push @{ $m == $x ? \@on_x : \@other }, "hang$i";
        last if @on_x >= 2 && @other >= 3;
    }
    @on_x = @on_x[0, 1];
    @other = @other[0 .. 2];

    # X names the hung port as its own; every master's map says so
    my $r = LG::Stack::_node($x);
    $r->config('set', 'cluster-announce-port', $H);
    $r->quit;
    ok(eventually(sub {
           !grep { !grep { /:$H$/ } @{ LG::Stack::_slot_map($_) // [] } }
               @masters
       }, $SETTLE), "every master's map names X at the hung port");

    # the connect timeout longer than the wait (as by default it is
    # longer than what is left of it once the map came); the wait long
    # enough that a third of it leaves a loaded machine time
    $s->write_conf(REDIS_CONNECT_TIMEOUT => '30s',
                   REDIS_COMMAND_TIMEOUT => '9s');
    my $from = reload_held($s, $proxy);
    my ($early, @st) = statuses($s, sub { $proxy->release('close') }, 1,
                                undef,
                                map { [{}, "/hot/f?k=$_"] } @on_x, @other);
    is($early, 0, 'none answered while the map was kept back');
    is_deeply(\@st, [(503) x @on_x, (200) x @other],
              "X's slots unavailable, the others served")
        or diag("statuses: @st");
    my $log = substr($s->error_log, $from);
    like($log, qr/127\.0\.0\.1:$H: connect timed out/,
         "X's connect given up before its requests' wait ended");
    unlike($log, qr/not connected within linegate_redis_command_timeout/,
           'no request waited out its command timeout');
    unlike($log, qr/exited on signal|\[alert\]/, 'no crash, no alert');

    $r = LG::Stack::_node($x);
    $r->config('set', 'cluster-announce-port', 0);
    $r->quit;
    close $_ for @$held;
};

$proxy->stop;

done_testing;
