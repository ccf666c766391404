# linegate_limit reads rl_gcra's reply only as the script answers: four
# numbers per zone, none negative, none beyond 2^53 (its numbers are
# Lua's). A Redis that answers anything else (a proxy in between, another
# script under its SHA) is a reply the limiter cannot read: logged, and
# the request falls back as linegate_limit_on_error says. Before, such
# numbers were taken as they came (found by t/fuzz/fuzz_limit.c): a retry
# of 2^63 - 1 ms overflowed Retry-After's rounding (undefined; gcc's
# build answered a Retry-After of 292 million years), a zone admitted
# with 2^63 - 1 remaining overflowed the refund's count (r=0), negative
# counts refused the request with "Retry-After: 0". A stand-in for Redis
# answers each zone's call with the reply written for it.
use strict;
use warnings;
use lib 't/lib';

use File::Temp ();
use IO::Socket::INET;
use POSIX qw(_exit);
use Test::More;
use LG::Stack;
use LG::Test ();

my $dir = LG::Test::public_dir('file.txt' => "ok\n");
my $replies = File::Temp::tempdir(CLEANUP => 1);

# the stand-in: EVALSHA and EVAL answered with the file of the key's zone
# (lg:rl:{<zone>:...}), SCRIPT LOAD with a SHA, PING with PONG, the rest OK
sub bulk { return '$' . length($_[0]) . "\r\n$_[0]\r\n" }

sub serve {
    my ($c) = @_;
    while (defined(my $line = <$c>)) {
        next unless $line =~ /^\*(\d+)/;
        my @argv;
        for (1 .. $1) {
            my $len = <$c> // return;
            $len =~ /^\$(\d+)/ or return;
            read($c, my $buf, $1 + 2) or return;
            push @argv, substr($buf, 0, -2);
        }
        my $cmd = uc($argv[0] // '');
        if ($cmd eq 'EVALSHA' || $cmd eq 'EVAL') {
            my ($zone) = ($argv[3] // '') =~ /^lg:rl:\{([^:]+):/;
            open my $fh, '<', "$replies/" . ($zone // 'none') or return;
            my $reply = do { local $/; <$fh> };
            print $c $reply;
        }
        elsif ($cmd eq 'SCRIPT') { print $c bulk('0' x 40) }
        elsif ($cmd eq 'PING')   { print $c "+PONG\r\n" }
        else                     { print $c "+OK\r\n" }
    }
}

my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                              Listen => 16, ReuseAddr => 1)
    or die "listen: $!";
my $fake = fork // die "fork: $!";
if ($fake == 0) {
    $SIG{CHLD} = 'IGNORE';
    while (my $c = $l->accept) {
        next if fork;
        serve($c);
        _exit(0);
    }
    _exit(0);
}
END { local $?; if ($fake) { kill 'TERM', $fake; waitpid $fake, 0 } }

sub reply {
    my ($zone, @n) = @_;
    open my $fh, '>', "$replies/$zone" or die "$zone: $!";
    print $fh '*' . scalar(@n) . "\r\n", map { ":$_\r\n" } @n;
    close $fh;
}

my $http = <<"CONF";
    linegate_limit_zone a key=\$arg_k rate=10r/h burst=5;
    linegate_limit_zone b key=\$arg_k rate=2r/h burst=3;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /open/ {
            linegate_limit zone=a;
            try_files /file.txt =404;
        }
        location /closed/ {
            linegate_limit zone=a;
            linegate_limit_on_error closed;
            try_files /file.txt =404;
        }
        location /two/ {
            linegate_limit zone=a;
            linegate_limit zone=b;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, api => 0,
                       REDIS => '127.0.0.1:' . $l->sockport,
                       HTTP_EXTRA => $http, SERVER_EXTRA => $server)->start;
my $ua = $s->ua;
my $n = 0;

sub get { return $ua->get($s->url($_[0] . '?k=k' . ++$n))->res }

sub unread {
    my ($path, $what) = @_;
    my $res = get($path);
    my $closed = $path eq '/closed/';
    is($res->code, $closed ? 503 : 200, "$what: falls back ($path)");
    is($res->headers->header('X-Limit'), $closed ? 'CLOSED' : 'OPEN',
       "$what: " . ($closed ? 'CLOSED' : 'OPEN'));
    is($res->headers->header('Retry-After'), $closed ? '1' : undef,
       "$what: Retry-After " . ($closed ? '1' : 'none'));
    is($res->headers->header('RateLimit'), undef, "$what: no RateLimit");
    return $res;
}

subtest 'a reply of the script: read' => sub {
    reply(a => 0, 0, 5000, 2500);
    my $res = get('/open/');
    is($res->code, 429, 'refused: 429');
    is($res->headers->header('X-Limit'), 'REJECTED', 'REJECTED');
    is($res->headers->header('Retry-After'), '3', 'Retry-After 3');
    # t: until r grows, the retry (not the reset, 5 s)
    is($res->headers->header('RateLimit'), '"a";r=0;t=3', 'RateLimit');

    reply(a => 1, 4, 3600000, 0);
    $res = get('/open/');
    is($res->code, 200, 'admitted: 200');
    # t: the next of the burst (6) back, one T (360 s) before the reset
    is($res->headers->header('RateLimit'), '"a";r=4;t=3240', 'RateLimit');

    # the largest number the script may answer
    reply(a => 0, 0, '9007199254740992', '9007199254740992');
    $res = get('/open/');
    is($res->code, 429, '2^53: 429');
    is($res->headers->header('Retry-After'), '9007199254741',
       '2^53: Retry-After rounded up');
};

subtest 'a retry of 2^63 - 1 ms' => sub {
    reply(a => 0, 0, '9223372036854775807', '9223372036854775807');
    unread($_, 'retry 2^63 - 1') for '/open/', '/closed/';
};

subtest 'counts beyond 2^53, negative counts' => sub {
    reply(a => 0, 0, '9007199254740994', 1000);
    unread('/open/', 'reset 2^53 + 2');
    reply(a => -1, -5, -10, -20);
    unread($_, 'negative') for '/open/', '/closed/';
    reply(a => 0, 0, 1000, -1);
    unread('/closed/', 'a negative retry');
};

subtest 'two zones: one admits with 2^63 - 1 remaining' => sub {
    reply(a => 1, '9223372036854775807', 10, 0);
    reply(b => 1, 2, 1000, 0);
    unread('/two/', 'remaining 2^63 - 1');

    # b's refusal, read, refuses the request whatever a's reply was: a
    # client over b's limit is not admitted by the fallback (open)
    reply(b => 0, 0, 1000, 500);
    my $res = get('/two/');
    is($res->code, 429, "a unread, refused by b: 429");
    is($res->headers->header('X-Limit'), 'REJECTED', 'REJECTED');
    is($res->headers->header('Retry-After'), '1', 'Retry-After 1');
    is($res->headers->header('RateLimit'), '"b";r=0;t=1',
       'RateLimit of the zone read');

    # as the script answers: the refusal, and the admission refunded
    reply(a => 1, 4, 3600000, 0);
    $res = get('/two/');
    is($res->code, 429, 'refused by b: 429');
    is($res->headers->header('Retry-After'), '1', 'Retry-After 1');
    # a's reset less the T (360 s) given back; r within a's q (10)
    is($res->headers->header('RateLimit'), '"a";r=5;t=3240, "b";r=0;t=1',
       'a given back its admission');
};

like($s->error_log, qr/unexpected linegate_limit reply/,
     'the replies it cannot read are logged');

done_testing;
