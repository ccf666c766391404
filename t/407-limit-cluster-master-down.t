# linegate_limit on a Redis Cluster whose master of some slots is down
# (SIGKILL, before a replica takes over): its keys fall back, and the
# worker logs that the slot's master is not connected once a second, not
# once per request.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time sleep);
use LG::Stack;
use LG::Test ();
use LG::Limit qw(rl_key);
use LG::RedisCluster;

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone z key=\$arg_k rate=100r/s burst=100;
    linegate_limit_zone q key=\$arg_k rate=1r/h burst=0;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /l/ {
            linegate_limit zone=z;
            linegate_limit_on_error local;
            try_files /file.txt =404;
        }
        location /q/ {
            linegate_limit zone=q;
            linegate_limit_on_error local;
            try_files /file.txt =404;
        }
CONF

# the master stays down for the whole file: once the others marked it
# FAIL (cluster-node-timeout), every slot would answer CLUSTERDOWN until
# its replica is promoted, and the keys of the other masters would fall
# back too (the window the checks below ran into on a loaded machine)
my $s = LG::Stack->new(redis => 'cluster', stub => 0, WORKERS => 1,
                       cluster_node_timeout => 30000,
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server)->start;

sub st {
    my $res = $s->ua->get($s->url($_[0]))->res;
    return $res->code . ' ' . ($res->headers->header('X-Limit') // '');
}

my ($victim) = $s->cluster_masters;
my %slots = map { $_ => 1 } $s->cluster_slots_of($victim);
my @v;
for (my $i = 0; @v < 30 && $i < 1_000_000; $i++) {
    push @v, "v$i" if $slots{LG::RedisCluster::keyslot(rl_key('z', "v$i"))};
}
is(scalar @v, 30, "30 keys on $victim");
is(st("/l/?k=$v[0]"), '200 PASSED', 'Redis decides while it is up');

my $mark = length $s->error_log;
$s->cluster_kill_master($victim);
my $t0 = time;
my @st = map { st("/l/?k=$_") } @v;
my $secs = time - $t0;
is_deeply([grep { $_ ne '200 LOCAL_PASSED' } @st[1 .. $#st]], [],
          'its keys fall back to local') or diag("@st");
my @lines = substr($s->error_log, $mark)
    =~ /the master of slot \d+ is not connected/g;
ok(@lines >= 1, 'the slot\'s master is logged as down');
ok(@lines <= int($secs) + 2, scalar(@lines) . ' lines for 30 requests in '
   . sprintf('%.1f s: once a second', $secs));

# a key of the down master keeps its local state while the other masters
# decide the other keys: it must not start again empty every second (a
# cluster's outage is one master's, not Redis's)
{
    my ($q) = grep { $slots{LG::RedisCluster::keyslot(rl_key('q', $_))} }
              map { "q$_" } 0 .. 100_000;
    my @up = grep { !$slots{LG::RedisCluster::keyslot(rl_key('q', $_))} }
             map { "u$_" } 0 .. 1000;
    is(st("/q/?k=$q"), '200 LOCAL_PASSED', 'its first request, locally');
    my @later;
    for my $u (@up[0 .. 2]) {
        sleep 1.1;
        # another master decides, a second later
        is(st("/q/?k=$u"), '200 PASSED', "$u: decided by Redis");
        push @later, st("/q/?k=$q");
    }
    is_deeply(\@later, [('429 LOCAL_REJECTED') x 3],
              'then refused, seconds later too') or diag("@later");
}

done_testing;
