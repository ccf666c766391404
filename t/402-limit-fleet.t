# Exact across the fleet: two, then three nginx instances on one Redis,
# real parallel requests spread over every node and worker; one key never
# gets more than rate x time + burst (+1, the request at time 0) admitted.
# limit_req on the same nodes, for contrast, admits its rate per node.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);
use LG::Stack;
use LG::Test ();

my $RATE = 20;     # r/s
my $BURST = 10;
my $SECS = 2;
my $CLIENTS = 4;
my $LEASE_MS = 200;    # leases of up to RATE x 0.2 = 4 requests

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone fleet key=\$arg_k rate=${RATE}r/s burst=$BURST;
    linegate_limit_zone leased key=\$arg_k rate=${RATE}r/s burst=$BURST
                        lease=${LEASE_MS}ms;
    limit_req_zone \$arg_k zone=node:1m rate=${RATE}r/s;
CONF

my $server = <<"CONF";
        root $dir;
        location /fleet/ {
            linegate_limit zone=fleet;
            try_files /file.txt =404;
        }
        location /leased/ {
            linegate_limit zone=leased;
            try_files /file.txt =404;
        }
        location /node/ {
            limit_req zone=node burst=$BURST nodelay;
            try_files /file.txt =404;
        }
CONF

my $a = LG::Stack->new(stub => 0, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my @nodes = ($a);

sub add_node {
    # on the first node's Redis (LG_REDIS=cluster: its cluster's seeds)
    push @nodes, LG::Stack->new(stub => 0, HTTP_EXTRA => $http,
                                SERVER_EXTRA => $server, redis => 'single',
                                api => $a->api,
                                REDIS => $a->redis_directive)
                          ->start;
}

# one client: keep-alive HTTP/1.1 GETs round-robin over the nodes until
# the deadline; prints "<admitted> <rejected> <other>": a rejection is a
# 429 (linegate_limit's status; limit_req's 503s, on /node/, count as
# other, where only the admitted are reported)
sub client {
    my ($path, $until, $out) = @_;
    my @socks;
    my ($ok, $no, $other) = (0, 0, 0);
    my $i = 0;
    while (time < $until) {
        my $node = $i++ % @nodes;
        my $c = $socks[$node] //= IO::Socket::INET->new(
            PeerAddr => '127.0.0.1', PeerPort => $nodes[$node]->port)
            or die "connect: $!";
        print $c "GET $path HTTP/1.1\r\nHost: x\r\n\r\n";
        my $status = <$c>;
        my $len = 0;
        while (defined(my $h = <$c>)) {
            last if $h eq "\r\n";
            $len = $1 if $h =~ /^Content-Length:\s*(\d+)/i;
        }
        read($c, my $body, $len) if $len;
        if (!defined $status) { $socks[$node] = undef; next }
        if ($status =~ / 200 /) { $ok++ }
        elsif ($status =~ / 429 /) { $no++ }
        else { $other++ }
    }
    open my $o, '>', $out or die;
    print $o "$ok $no $other\n";
    close $o;
}

sub burst_of_clients {
    my ($path) = @_;
    my $start = time;
    my $until = $start + $SECS;
    my @pids;
    for my $i (1 .. $CLIENTS) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $ok = eval { client($path, $until, "$dir/c$i"); 1 };
            _exit($ok ? 0 : 1);
        }
        push @pids, $pid;
    }
    waitpid $_, 0 for @pids;
    my $elapsed = time - $start;
    my ($ok, $no, $other) = (0, 0, 0);
    for my $i (1 .. $CLIENTS) {
        open my $f, '<', "$dir/c$i" or die "client $i: no result";
        my @v = split ' ', scalar <$f>;
        $ok += $v[0];
        $no += $v[1];
        $other += $v[2];
    }
    return ($ok, $no, $other, $elapsed);
}

for my $count (2, 3) {
    add_node() while @nodes < $count;

    subtest "$count nodes on one Redis" => sub {
        my $key = "fleet$count-$$";
        my ($ok, $no, $other, $secs) = burst_of_clients("/fleet/?k=$key");
        my $bound = int($RATE * $secs) + $BURST + 1;
        diag(sprintf "linegate_limit, %d nodes: %d admitted, %d rejected "
                     . "in %.2f s (bound %d)", $count, $ok, $no, $secs,
                     $bound);
        is($other, 0, 'only 200 and 429 answers');
        ok($no > $ok, 'the clients offered more than the limit');
        ok($ok <= $bound, "admitted $ok <= rate x time + burst + 1 "
                          . "= $bound");
        ok($ok >= $BURST + 1, 'at least the burst was admitted');

        ($ok, $no, $other, $secs) = burst_of_clients("/node/?k=$key");
        diag(sprintf "limit_req, %d nodes: %d admitted in %.2f s (one "
                     . "node's bound %d)", $count, $ok, $secs,
                     int($RATE * $secs) + $BURST + 1);
    };
}

subtest 'leases: 3 nodes, within rate x (time + lease) + burst + 1' => sub {
    my $key = "leased-$$";
    my ($ok, $no, $other, $secs) = burst_of_clients("/leased/?k=$key");
    my $bound = int($RATE * ($secs + $LEASE_MS / 1000)) + $BURST + 1;
    diag(sprintf "linegate_limit with leases, 3 nodes: %d admitted, %d "
                 . "rejected in %.2f s (bound %d)", $ok, $no, $secs, $bound);
    is($other, 0, 'only 200 and 429 answers');
    ok($ok <= $bound, "admitted $ok <= $bound");
    ok($ok >= $BURST + 1, 'at least the burst was admitted');
};

done_testing;
