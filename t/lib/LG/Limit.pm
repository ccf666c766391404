package LG::Limit;

# Helpers for the linegate_limit tests (t/4xx-limit-*.t): a tiny HTTP
# backend for proxy_pass, Redis's clock, the Redis key of a limited value.

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use POSIX qw(_exit);
use Test::More ();
use Time::HiRes ();

our @EXPORT_OK = qw(backend redis_now_us rl_key lease_counts_down);

# A forked HTTP/1.0 backend: answers 200 "backend <path>" with a header
# X-Backend: 1, and appends each request's path to $log. Returns
# (pid, port).
sub backend {
    my ($log) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 128, ReuseAddr => 1)
        or die "listen: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{CHLD} = 'IGNORE';
        while (my $c = $l->accept) {
            my $line = <$c> // next;
            while (defined(my $h = <$c>)) { last if $h =~ /^\r?\n$/ }
            my ($path) = $line =~ m{^\S+ (\S+)};
            if (open my $fh, '>>', $log) { print $fh "$path\n"; close $fh }
            my $body = "backend $path";
            print $c "HTTP/1.0 200 OK\r\nX-Backend: 1\r\n"
                . "Content-Length: " . length($body) . "\r\n"
                . "Connection: close\r\n\r\n$body";
            close $c;
        }
        _exit(0);
    }
    my $port = $l->sockport;
    close $l;
    return ($pid, $port);
}

# Redis's TIME in microseconds: the clock of every decision
sub redis_now_us {
    my ($r) = @_;
    my ($s, $us) = $r->time;
    return $s * 1_000_000 + $us;
}

sub rl_key { my ($zone, $v) = @_; return "lg:rl:{$zone:v:$v}" }

# 40 requests of one key from one worker ($send: a response): each one
# its lease admitted (no decision Redis made since the one before,
# $decisions: a count of them) shows RateLimit r one less than the one
# before, and r went down over the 40, less what the rate ($per_sec)
# gave back meanwhile
sub lease_counts_down {
    my ($send, $decisions, $per_sec) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my (@r, @leased);
    my $t0 = Time::HiRes::time();
    for (1 .. 40) {
        my $before = $decisions->();
        my $res = $send->();
        my ($n) = ($res->headers->header('RateLimit') // '') =~ /;r=(\d+);/;
        push @r, $res->code == 200 ? $n // -1 : -1;
        push @leased, $decisions->() == $before;
    }
    my @from_lease = grep { $leased[$_] } 1 .. $#r;
    Test::More::ok(@from_lease >= 20,
                   scalar(@from_lease) . ' of 40 from the lease');
    my @bad = grep { $r[$_] != $r[$_ - 1] - 1 } @from_lease;
    Test::More::is_deeply(\@bad, [], 'each one from the lease: r one '
                          . 'less than the request before')
        or Test::More::diag("r: @r");
    # 39 spent since the first, less what the rate gave back
    my $back = int($per_sec * (Time::HiRes::time() - $t0)) + 1;
    Test::More::cmp_ok($r[-1], '<=', $r[0] - 39 + $back,
                       "r went down: $r[0] to $r[-1], $back given back");
}

1;
