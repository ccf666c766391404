package LG::Limit;

# Helpers for the linegate_limit tests (t/4xx-limit-*.t): a tiny HTTP
# backend for proxy_pass, Redis's clock, the Redis key of a limited value.

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use POSIX qw(_exit);

our @EXPORT_OK = qw(backend redis_now_us rl_key);

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

1;
