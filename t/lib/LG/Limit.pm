package LG::Limit;

# Helpers for the linegate_limit tests (t/4xx-limit-*.t): a tiny HTTP
# backend for proxy_pass, Redis's clock, the Redis key of a limited value.

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use POSIX qw(_exit);
use Mojo::Promise;
use Mojo::UserAgent;
use Test::More ();
use Time::HiRes ();
use Digest::MD5 qw(md5_hex);

our @EXPORT_OK = qw(backend redis_now_us rl_key hot_location_conf
                    limit_status lease_counts_down lease_holds_admissions
                    evalsha_calls);

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

# ($http, $server) for LG::Stack: a location /hot/ limited by zone hot
# (keyed by the k argument, 100,000 r/s: never refused for its rate;
# closed when Redis fails), serving $dir/file.txt, its outcome in the
# X-Limit header
sub hot_location_conf {
    my ($dir) = @_;
    return (<<"HTTP", <<"SERVER");
    linegate_limit_zone hot key=\$arg_k rate=100000r/s burst=100000;
    linegate_limit_on_error closed;
HTTP
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /hot/ {
            linegate_limit zone=hot;
            try_files /file.txt =404;
        }
SERVER
}

# GET $path of stack $s: "<status> <X-Limit>" ("none", "-" when absent);
# on the stack's user agent (a kept-alive connection) unless given $ua
sub limit_status {
    my ($s, $path, $ua) = @_;
    my $res = ($ua // $s->ua)->get($s->url($path))->res;
    return join ' ', $res->code // 'none',
        $res->headers->header('X-Limit') // '-';
}

# how many EVALSHA Redis ran so far (INFO commandstats; a cluster's:
# every master's): one per decision of a location with one zone
sub evalsha_calls {
    my ($r) = @_;
    my $st = $r->info('commandstats')->{cmdstat_evalsha} // '';
    my ($n) = $st =~ /calls=(\d+)/;
    return $n // 0;
}

# the Redis key of a zone's value: always its MD5 (never the value itself)
sub rl_key { my ($zone, $v) = @_; return "lg:rl:{$zone:h:" . md5_hex($v) . '}' }

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

# The worker's next lease in flight and its current one spent, a request
# is decided alone (want 1); the lease, answered just before it, takes
# the last admissions and Redis refuses the decision. The worker holds
# one of that lease, paid for in Redis: the request takes it, and no
# rejection is cached that would refuse while the worker holds
# admissions. Redis is paused so that both decisions are in flight
# together. A zone or a workspace rate of T = 500 ms, a lease of at most
# 2: $get sends a request (its status), $can->($n, $left) sets the
# state ($n admissions pass now, the next one $left x T after them),
# $pause pauses Redis for 200 ms, $race->($ua) sends a request on $ua (a
# promise), $what names what is limited.
sub lease_holds_admissions {
    my (%t) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    # the lease grows to 2, then ends spent with none asked for: a
    # lease of 1 granted (there was 1), then a refusal that takes it
    Test::More::is($t{get}->(), 200, 'a lease of 1');
    Test::More::is($t{get}->(), 200, 'a lease of 2: one left');
    $t{can}->(1, 0.5);
    Test::More::is($t{get}->(), 200, 'the next lease: 1 (the last one)');
    Test::More::is($t{get}->(), 200, 'the next refused: the one left taken');

    # 2 admissions left, the next one 0.9 T after them (450 ms)
    my $t0 = Time::HiRes::time();
    $t{can}->(2, 0.9);
    $t{pause}->();
    my ($ua1, $ua2) = (Mojo::UserAgent->new, Mojo::UserAgent->new);
    my $a = $t{race}->($ua1);
    my $b = Mojo::Promise->timer(0.05)->then(sub { $t{race}->($ua2) });
    my @codes;
    Mojo::Promise->all($a, $b)
        ->then(sub { @codes = map { $_->[0]->res->code } @_ })->wait;
    my $after = $t{get}->();
    my $secs = Time::HiRes::time() - $t0;
    Test::More::is_deeply(\@codes, [200, 200],
                          'the lease (2) and the decision alone (refused '
                          . 'by Redis, admitted by the lease) both admitted')
        or Test::More::diag("@codes");
    # at the limit only while the next admission is not due: 450 ms
    # after the state was set (a loaded machine may take longer)
    if ($secs < 0.4) {
        Test::More::is($after, 429, "then the $t{what} is at its limit");
    }
    else {
        Test::More::note(sprintf('%.2f s: the next admission was due',
                                 $secs));
    }
}

1;
