# linegate_limit_zone lease=: a worker reserves several admissions of a
# hot key in one Redis decision and spends them itself within the lease
# time; the lease grows while it is spent in time. (The fleet-wide bound
# with leases is checked in t/402.) One worker: its leases are the ones the
# checks count on.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes ();
use Mojo::Promise;
use Mojo::UserAgent;
use LG::Stack;
use LG::Test ();
use LG::Limit qw(rl_key lease_counts_down);

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone hot key=\$arg_k rate=1000r/s burst=500 lease=200ms;
    linegate_limit_zone plain key=\$arg_k rate=1000r/s burst=500;
    linegate_limit_zone tight key=\$arg_k rate=10r/s burst=19 lease=1s;
    linegate_limit_zone pair key=\$arg_k rate=2r/s burst=9 lease=1s;
    linegate_limit_zone count key=\$arg_k rate=1200r/m burst=99 lease=1s;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        location /hot/ { linegate_limit zone=hot; try_files /file.txt =404; }
        location /tight/ { linegate_limit zone=tight; try_files /file.txt =404; }
        location /pair/ { linegate_limit zone=pair; try_files /file.txt =404; }
        location /count/ {
            linegate_limit zone=count;
            try_files /file.txt =404;
        }
        location /plain/ {
            linegate_limit zone=plain;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, WORKERS => 1, HTTP_EXTRA => $http,
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

# RateLimit's r of a leased key is what Redis said would pass, plus the
# admissions the worker holds: a request the lease admits has one less
# than the request before it (the same worker's: one worker). Zone count
# is 20 r/s with a burst of 100 (q=1200 a minute: r is never cut to q)
subtest 'r counts down as the lease is spent' => sub {
    my $k = "cd$$";
    lease_counts_down(sub { $ua->get($s->url("/count/?k=$k"))->res },
                      \&evalsha_calls, 20);
};

# Zone pair: T = 500 ms, burst 9 (tau 4.5 s), a lease of at most 2. The
# key's TAT set so that $can admissions pass now, the next one $left x T
# later than the last of them
sub pair_can {
    my ($k, $can, $left) = @_;
    my $now = int(Time::HiRes::time() * 1e6);
    my $tat = $now + 4_500_000 - int(($can - $left) * 500_000);
    $r->set(rl_key('pair', $k), $tat, 'PX', 10_000);
}

# The worker's next lease in flight and its current one spent, a request
# is decided alone (want 1); the lease, answered just before it, takes
# the key's last admissions and Redis refuses it. The worker holds one of
# that lease, paid for in Redis: the request takes it, and no rejection
# is cached that would refuse the key while the worker holds admissions.
# Redis is paused so that both decisions are in flight together.
subtest 'a decision refused while the lease holds admissions' => sub {
    my $k = "pr$$";
    my $get = sub { $ua->get($s->url("/pair/?k=$k"))->res->code };

    # the lease grows to 2, then ends spent with none asked for: a
    # lease of 1 granted (the key had 1), then a refusal that takes it
    is($get->(), 200, 'a lease of 1');
    is($get->(), 200, 'a lease of 2: one left');
    pair_can($k, 1, 0.5);
    is($get->(), 200, 'the next lease: 1 (the last one)');
    is($get->(), 200, 'the next refused: the one left taken');

    # 2 admissions left, the next one 0.9 T after them (450 ms)
    my $t0 = Time::HiRes::time();
    pair_can($k, 2, 0.9);
    $r->client_pause(200);
    my ($ua1, $ua2) = (Mojo::UserAgent->new, Mojo::UserAgent->new);
    my $a = $ua1->get_p($s->url("/pair/?k=$k"));
    my $b = Mojo::Promise->timer(0.05)
        ->then(sub { $ua2->get_p($s->url("/pair/?k=$k")) });
    my @codes;
    Mojo::Promise->all($a, $b)
        ->then(sub { @codes = map { $_->[0]->res->code } @_ })->wait;
    my $after = $get->();
    my $secs = Time::HiRes::time() - $t0;
    is_deeply(\@codes, [200, 200],
              'the lease (2) and the decision alone (refused by Redis, '
              . 'admitted by the lease) both admitted') or diag("@codes");
    # at the limit only while the next admission is not due: 450 ms
    # after the state was set (a loaded machine may take longer)
    if ($secs < 0.4) {
        is($after, 429, 'then the key is at its limit');
    }
    else {
        note(sprintf('%.2f s: the next admission was due', $secs));
    }
};

done_testing;
