# linegate_limit_zone lease=: a worker reserves several admissions of a
# hot key in one Redis decision and spends them itself within the lease
# time; the lease grows while it is spent in time. (The fleet-wide bound
# with leases is checked in t/402.)
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes ();
use LG::Stack;
use LG::Test ();

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone hot key=\$arg_k rate=1000r/s burst=500 lease=200ms;
    linegate_limit_zone plain key=\$arg_k rate=1000r/s burst=500;
    linegate_limit_zone tight key=\$arg_k rate=10r/s burst=19 lease=1s;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /hot/ { linegate_limit zone=hot; try_files /file.txt =404; }
        location /tight/ { linegate_limit zone=tight; try_files /file.txt =404; }
        location /plain/ {
            linegate_limit zone=plain;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $r = $s->redis;
my $ua = $s->ua;

sub evalsha_calls {
    my $st = $r->info('commandstats')->{cmdstat_evalsha} // '';
    my ($n) = $st =~ /calls=(\d+)/;
    return $n // 0;
}

sub run {
    my ($path, $n) = @_;
    my $before = evalsha_calls();
    my @res = map { $ua->get($s->url($path))->res } 1 .. $n;
    return (evalsha_calls() - $before, @res);
}

subtest 'without a lease: one decision per request' => sub {
    my ($calls, @res) = run("/plain/?k=p$$", 100);
    is(scalar(grep { $_->code == 200 } @res), 100, 'all admitted');
    is($calls, 100, 'Redis asked 100 times');
};

subtest 'with a lease: far fewer decisions' => sub {
    my ($calls, @res) = run("/hot/?k=h$$", 200);
    is(scalar(grep { $_->code == 200 } @res), 200, 'all admitted');
    ok($calls < 100, "Redis asked $calls times for 200 requests");
    is($res[-1]->headers->header('X-Limit'), 'PASSED', 'PASSED');
    is($res[-1]->headers->header('RateLimit-Policy'), '"hot";q=1000;w=1',
       'RateLimit-Policy on a leased admission');
    like($res[-1]->headers->header('RateLimit') // '',
         qr/^"hot";r=\d+;t=\d+$/, 'RateLimit on a leased admission');
};

subtest 'leases stay within rate x (time + lease) + burst + 1' => sub {
    # 10 r/s, burst 19, lease 1 s: at most 10 requests a lease
    my $t0 = Time::HiRes::time();
    my ($calls, @res) = run("/tight/?k=t$$", 60);
    my $secs = Time::HiRes::time() - $t0;
    my $ok = grep { $_->code == 200 } @res;
    my $no = grep { $_->code == 429 } @res;
    is($ok + $no, 60, 'only 200 and 429');
    my $bound = int(10 * ($secs + 1)) + 20;
    ok($ok <= $bound, "admitted $ok <= $bound in " . sprintf('%.2f s', $secs));
    ok($ok >= 20, "at least the burst ($ok)");
    ok($no > 0, 'the rest rejected');
};

done_testing;
