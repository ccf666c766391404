#!/usr/bin/perl
# linegate_limit under wrk, in one nginx beside nginx's limit_req and an
# unlimited location, the scenarios of shared/bench/peers/ratelimit
# (allow-1key, allow-10k, reject), interleaved. Redis commands per request
# from INFO commandstats, new Redis connections from INFO stats.
#
#   perl bench/limit.pl            (LG_WRK="-t2 -c50 -d5s", LG_ROUNDS=1)
#
# The kjdev and Lua peers are run by the peers' own run.sh; this script
# measures linegate_limit against what runs in the same nginx.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use File::Temp ();
use LG::Stack;

my $WRK = $ENV{LG_WRK} // '-t2 -c50 -d5s';
my $ROUNDS = $ENV{LG_ROUNDS} // 1;
my $KEYS_LUA = $ENV{LG_KEYS_LUA}
    // '/work/shared/bench/peers/ratelimit/wrk/keys.lua';

my $http = <<'CONF';
    open_file_cache max=16;
    open_file_cache_errors on;
    limit_req_zone $http_x_api_key zone=rl_allow:10m rate=1000000r/s;
    limit_req_zone $http_x_api_key zone=rl_reject:10m rate=1r/m;
    limit_req_status 429;
    limit_req_log_level info;
    linegate_limit_zone allow key=$http_x_api_key rate=1000000r/s
                        burst=100000000;
    linegate_limit_zone reject key=$http_x_api_key rate=1r/h;
    linegate_limit_zone leased key=$http_x_api_key rate=1000000r/s
                        burst=100000000 lease=10ms;
CONF

my $server = <<'CONF';
        access_log off;
        location = /plain        { try_files /.none @ok; }
        location = /lr/allow     { limit_req zone=rl_allow burst=1000 nodelay;
                                   try_files /.none @ok; }
        location = /lr/reject    { limit_req zone=rl_reject;
                                   try_files /.none @ok; }
        location = /lg/allow     { linegate_limit zone=allow;
                                   try_files /.none @ok; }
        location = /lg/reject    { linegate_limit zone=reject;
                                   try_files /.none @ok; }
        location = /lg/leased    { linegate_limit zone=leased;
                                   try_files /.none @ok; }
        location @ok {
            default_type application/json;
            return 200 '{"ok":true}';
        }
CONF

my $s = LG::Stack->new(stub => 0, LOG_LEVEL => 'warn', HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $r = $s->redis;

# the reject key has used its one request
$s->ua->get($s->url($_) => {'X-Api-Key' => 'rk'}) for '/lr/reject',
    '/lg/reject';

my @targets = (
    ['static',         'allow-1key', '/plain',     '-H "X-Api-Key: k1"'],
    ['limit_req',      'allow-1key', '/lr/allow',  '-H "X-Api-Key: k1"'],
    ['linegate_limit', 'allow-1key', '/lg/allow',  '-H "X-Api-Key: k1"'],
    ['linegate_limit lease=10ms', 'allow-1key', '/lg/leased',
     '-H "X-Api-Key: k1"'],
    ['static',         'allow-10k',  '/plain',     "-s $KEYS_LUA"],
    ['limit_req',      'allow-10k',  '/lr/allow',  "-s $KEYS_LUA"],
    ['linegate_limit', 'allow-10k',  '/lg/allow',  "-s $KEYS_LUA"],
    ['linegate_limit lease=10ms', 'allow-10k', '/lg/leased',
     "-s $KEYS_LUA"],
    ['static',         'reject',     '/plain',     '-H "X-Api-Key: rk"'],
    ['limit_req',      'reject',     '/lr/reject', '-H "X-Api-Key: rk"'],
    ['linegate_limit', 'reject',     '/lg/reject', '-H "X-Api-Key: rk"'],
);

sub stats {
    my $cs = $r->info('commandstats');
    my $st = $r->info('stats');
    my %calls = map {
        my ($n) = $cs->{$_} =~ /calls=(\d+)/;
        (s/^cmdstat_//r => $n)
    } keys %$cs;
    return (\%calls, $st->{total_connections_received});
}

print "| peer | scenario | round | req/s | p50 ms | p99 ms | non-2xx "
    . "| x static | x limit_req | Redis cmds/req | new Redis conns |\n";
print "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n";

for my $round (1 .. $ROUNDS) {
    my %rps;
    for my $t (@targets) {
        my ($peer, $sc, $path, $args) = @$t;
        system("wrk -t1 -c10 -d1s $args " . $s->url($path)
               . " >/dev/null 2>&1");    # warm-up
        my ($c0, $n0) = stats();
        my $out = qx{wrk $WRK --latency $args @{[$s->url($path)]} 2>&1};
        my ($c1, $n1) = stats();
        my ($req) = $out =~ /(\d+) requests in/;
        my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
        my ($p50) = $out =~ /^\s+50%\s+([\d.]+\w+)/m;
        my ($p99) = $out =~ /^\s+99%\s+([\d.]+\w+)/m;
        my ($non2xx) = $out =~ /Non-2xx or 3xx responses: (\d+)/;
        $non2xx //= 0;
        my $ms = sub {
            my ($v) = @_;
            return '?' unless defined $v;
            $v =~ /^([\d.]+)(us|ms|s)$/ or return $v;
            return sprintf '%.2f', $1 / 1000 if $2 eq 'us';
            return sprintf '%.2f', $1 if $2 eq 'ms';
            return sprintf '%.2f', $1 * 1000;
        };
        my $total = 0;
        my @per;
        for my $cmd (sort keys %$c1) {
            my $d = $c1->{$cmd} - ($c0->{$cmd} // 0);
            next if $d <= 0 || $cmd eq 'info';
            $total += $d;
            push @per, sprintf '%s %.2f', $cmd, $d / ($req || 1);
        }
        $rps{$sc}{$peer} = $rps;
        printf "| %s | %s | %d | %.0f | %s | %s | %d (%.1f%%) | %.2f | %s "
            . "| %s | %d |\n",
            $peer, $sc, $round, $rps, $ms->($p50), $ms->($p99), $non2xx,
            100 * $non2xx / ($req || 1), $rps / $rps{$sc}{static},
            $rps{$sc}{limit_req}
                ? sprintf('%.2f', $rps / $rps{$sc}{limit_req}) : '-',
            @per ? sprintf('%.2f (%s)', $total / ($req || 1), join ', ', @per)
                 : '0',
            $n1 - $n0;
    }
}
