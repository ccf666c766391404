#!/usr/bin/env perl
# Copies keys of one Redis to a Redis Cluster, each to the master of its
# slot (DUMP, then RESTORE ... REPLACE with its TTL): bench/run.sh's
# `cluster` phase gives the cluster the one Redis's seed, byte for byte.
#
#   perl bench/cluster-copy.pl --from 6391 --to 7001,7002,7003 \
#       [--flush] PATTERN...
#
# PATTERN: a SCAN MATCH pattern of the keys to copy ("lg:sbkey:*");
# --flush: FLUSHALL every master first. Prints "copied N keys (port: n,
# ...)" on stderr. Uses t/lib/LG/RedisCluster.pm (its keyslot and
# routing; MOVED followed).

use strict;
use warnings;

use FindBin ();
use Getopt::Long qw(GetOptions);
use lib "$FindBin::Bin/../t/lib";
use LG::RedisCluster;
use Redis;

my %o = (flush => 0);
GetOptions(\%o, 'from=i', 'to=s', 'flush!')
    && $o{from} && $o{to} && @ARGV
    or die "usage: $0 --from PORT --to P1,P2,P3 [--flush] PATTERN...\n";

my $src = Redis->new(server => "127.0.0.1:$o{from}", reconnect => 0,
                     cnx_timeout => 2, read_timeout => 10);
my $dst = LG::RedisCluster->new(ports => [split /,/, $o{to}]);

$dst->flushall if $o{flush};

my (%per, $n);
for my $pattern (@ARGV) {
    my $cursor = 0;
    do {
        my ($next, $keys) = $src->scan($cursor, 'MATCH', $pattern,
                                       'COUNT', 1000);
        for my $k (@$keys) {
            my $dump = $src->dump($k);
            next unless defined $dump;    # expired meanwhile
            my $ttl = $src->pttl($k);
            $ttl = 0 if $ttl < 0;
            $dst->restore($k, $ttl, $dump, 'REPLACE');
            $per{ $dst->master_of($k) }++;
            $n++;
        }
        $cursor = $next;
    } while ($cursor != 0);
}

printf STDERR "cluster-copy: copied %d keys (%s)\n", $n // 0,
    join(', ', map { "$_: $per{$_}" } sort keys %per);
$dst->quit;
$src->quit;
