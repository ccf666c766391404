#!/usr/bin/perl
# The workspace rate's lease (issue 14), measured: one busy workspace's
# GET /api/line-requests/:id under wrk, with linegate_workspace_rate
# 60000000r/m (as bench/linegate.conf.in) without and with a lease.
# Prints, per run: req/s, and per GET the Redis commands, the EVALSHA
# calls and their usec (INFO commandstats) and Redis's CPU (INFO cpu).
#
#   perl bench/ws-lease.pl [seconds per run (20)] [lease (200ms)]
#
# A test stack (t/lib/LG/Stack.pm: its own Redis, Stripe stub and nginx
# with 2 workers on free ports), wrk -t2 -c50.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use LG::Stack;
use LG::Lines;

my $secs = shift // 20;
my $lease = shift // '200ms';

sub stats {
    my ($r) = @_;
    my $cs = $r->info('commandstats');
    my $cpu = $r->info('cpu');
    my %s = (calls => 0, cpu => 1e6 * ($cpu->{used_cpu_sys}
                                        + $cpu->{used_cpu_user}));
    for my $k (keys %$cs) {
        my ($calls, $usec) = $cs->{$k} =~ /calls=(\d+),usec=(\d+)/ or next;
        $s{calls} += $calls;
        @s{qw(evalsha evalsha_usec)} = ($calls, $usec)
            if $k eq 'cmdstat_evalsha';
    }
    $s{$_} //= 0 for qw(evalsha evalsha_usec);
    return \%s;
}

for my $rate ('60000000r/m', "60000000r/m lease=$lease") {
    my $s = LG::Stack->new(WS_RATE => $rate)->start;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_bench_lease');
    my $id = $l->created($w);
    my @wrk = ('wrk', '-t2', '-c50', "-d${secs}s",
               '-H', "Authorization: $w->{auth}{Authorization}",
               $s->url("/api/line-requests/$id"));

    system(@wrk[0 .. 2], '-d2s', @wrk[4 .. $#wrk]) == 0 or die 'wrk';
    my $b = stats($s->redis);
    my $out = qx{@{[ map { "'$_'" } @wrk ]}};
    my $a = stats($s->redis);
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($n) = $out =~ /(\d+) requests in/;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses: (\d+)/;
    printf "%-30s %8.0f req/s  non-2xx %d  per GET: %.2f Redis cmds, "
           . "%.4f EVALSHA (%.2f us), Redis CPU %.1f us\n",
           $rate, $rps, $non2xx // 0, ($a->{calls} - $b->{calls}) / $n,
           ($a->{evalsha} - $b->{evalsha}) / $n,
           ($a->{evalsha_usec} - $b->{evalsha_usec}) / $n,
           ($a->{cpu} - $b->{cpu}) / $n;
    $s->stop;
}
