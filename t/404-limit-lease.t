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
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use LG::Stack;
use LG::Test ();
use LG::Limit qw(rl_key lease_counts_down lease_holds_admissions
                  evalsha_calls);

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

my $http = <<"CONF";
    linegate_limit_zone hot key=\$arg_k rate=1000r/s burst=500 lease=200ms;
    linegate_limit_zone plain key=\$arg_k rate=1000r/s burst=500;
    linegate_limit_zone tight key=\$arg_k rate=10r/s burst=19 lease=1s;
    linegate_limit_zone pair key=\$arg_k rate=2r/s burst=9 lease=1s;
    linegate_limit_zone count key=\$arg_k rate=1200r/m burst=99 lease=1s;
    linegate_limit_zone mono key=\$arg_k rate=240r/m burst=29 lease=1s;
    linegate_limit_zone down key=\$arg_k rate=10r/s burst=19 lease=1s;
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
        location /mono/ { linegate_limit zone=mono; try_files /file.txt =404; }
        location /down/ {
            linegate_limit zone=down;
            linegate_limit_on_error closed;
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

sub run {
    my ($path, $n) = @_;
    my $before = evalsha_calls($r);
    my @res = map { $ua->get($s->url($path))->res } 1 .. $n;
    return (evalsha_calls($r) - $before, @res);
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
                      sub { evalsha_calls($r) }, 20);
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

# A decision refused by Redis while the worker's lease holds admissions
# (LG::Limit's lease_holds_admissions says how)
subtest 'a decision refused while the lease holds admissions' => sub {
    my $k = "pr$$";
    lease_holds_admissions(
        get   => sub { $ua->get($s->url("/pair/?k=$k"))->res->code },
        can   => sub { pair_can($k, @_) },
        pause => sub { $r->client_pause(200) },
        race  => sub { $_[0]->get_p($s->url("/pair/?k=$k")) },
        what  => 'key');
};

# A lease decision in flight (Redis paused) with the current lease spent:
# two requests decided alone after it, their r counting the grant, the
# admissions it leaves the worker and themselves. The worker's next lease
# admissions must not say more than they did: they said the grant's
# remaining again (plus what they leave), one more than the last
# decision alone, as if time had given it back.
subtest 'r never steps back up after decisions alone' => sub {
    my $k = "mono$$";
    my $url = $s->url("/mono/?k=$k");
    my $rl = sub {
        my ($res) = @_;
        my ($v) = ($res->headers->header('RateLimit') // '') =~ /;r=(\d+);/;
        return $v;
    };
    my $paused = sub {    # the first sent first, then one every 50 ms
        my @ua = map { Mojo::UserAgent->new } 1 .. $_[0];
        $r->client_pause(300);
        my @p = ($ua[0]->get_p($url),
                 map { my $u = $ua[$_]; Mojo::Promise->timer(0.05 * $_)
                           ->then(sub { $u->get_p($url) }) } 1 .. $#ua);
        my @res;
        Mojo::Promise->all(@p)
            ->then(sub { @res = map { $_->[0]->res } @_ })->wait;
        return @res;
    };
    is($ua->get($url)->res->code, 200, 'a lease of 1');
    is($ua->get($url)->res->code, 200, 'a lease of 2: one left');
    # the next lease (4) asked; the one left spent; two decisions alone
    my @res = $paused->(4);
    is_deeply([map { $_->code } @res], [200, 200, 200, 200],
              'the lease decision, its last one, two decisions alone')
        or return;
    my $alone = $rl->($res[3]);
    # the next lease asked for again, and one of the 3 held spent
    @res = $paused->(2);
    is($res[1]->code, 200, 'admitted by the lease');
    my $next = $rl->($res[1]);
    ok(defined $alone && defined $next && $next < $alone,
       'r below the last decision alone\'s')
        or diag('decision alone r=' . ($alone // 'none')
                . ', lease r=' . ($next // 'none'));
};

# nginx's ngx_murmur_hash2, what the lease table hashed keys with
sub murmur2 {
    my ($data) = @_;
    my $m = 0x5bd1e995;
    my $mul = sub {
        my ($a) = @_;
        return ($a * ($m & 0xffff)
                + ((($a * ($m >> 16)) & 0xffff) << 16)) & 0xffffffff;
    };
    my @b = unpack 'C*', $data;
    my $h = length($data) & 0xffffffff;
    while (@b >= 4) {
        my $k = $b[0] | $b[1] << 8 | $b[2] << 16 | $b[3] << 24;
        splice @b, 0, 4;
        $k = $mul->($k);
        $k ^= $k >> 24;
        $k = $mul->($k);
        $h = $mul->($h) ^ $k;
    }
    if (@b) {
        $h ^= $b[2] << 16 if @b == 3;
        $h ^= $b[1] << 8 if @b >= 2;
        $h ^= $b[0];
        $h = $mul->($h);
    }
    $h ^= $h >> 13;
    $h = $mul->($h);
    $h ^= $h >> 15;
    return $h;
}

# Keys are a client's (here ?k=, often a header): two of them chosen to
# fall in a hot key's set of the lease table (4096 sets of 2) took its
# slot at every request, its lease dropped each time (the admissions it
# held lost, a Redis decision per request). The table is keyed per
# worker: keys chosen from the unkeyed hash share no set but by chance.
subtest 'keys chosen to share a hot key\'s set do not take its lease' => sub {
    my $v = "victim$$";
    my $set = murmur2(rl_key('hot', $v)) % 4096;
    my @flood;
    for (my $i = 0; @flood < 2; $i++) {
        my $k = "f$$-$i";
        push @flood, $k if murmur2(rl_key('hot', $k)) % 4096 == $set;
    }
    my $before = evalsha_calls($r);
    my @res;
    for (1 .. 150) {
        push @res, map { $ua->get($s->url("/hot/?k=$_"))->res } $v, @flood;
    }
    my $calls = evalsha_calls($r) - $before;
    is(scalar(grep { $_->code == 200 } @res), 450, 'all 450 admitted');
    ok($calls < 225, "Redis asked $calls times for 450 requests of 3 keys")
        or diag "the flood: @flood";
};

# Redis gone mid-lease (docs/directives.md, linegate_limit_on_error): the
# admissions the worker holds, paid for in Redis, still pass, for the
# lease time at most; then the zone's fallback (closed: 503). Zone down:
# 10r/s, lease 1 s: a lease of at most 10, two held at a time
subtest 'Redis stopped mid-lease: the held admissions, then the fallback'
    => sub {
    my $url = $s->url("/down/?k=dn$$");
    my @warm = map { $ua->get($url)->res } 1 .. 12;
    is(scalar(grep { $_->code == 200 } @warm), 12, 'the lease grown');
    $s->stop_redis;
    my @res = map { $ua->get($url)->res } 1 .. 40;
    my @codes = map { $_->code } @res;
    my $passed = grep { $_ == 200 } @codes;
    my $closed = grep { $_ == 503 } @codes;
    is($passed + $closed, 40, 'only 200 and 503');
    ok($passed >= 1 && $passed <= 20,
       "$passed passed from the worker's leases (at most 2 x 10)");
    my $first = (grep { $codes[$_] == 503 } 0 .. $#codes)[0] // 40;
    is(scalar(grep { $_ == 200 } @codes[$first .. $#codes]), 0,
       'then none: each falls back')
        or diag "@codes";
    is($res[-1]->headers->header('X-Limit'), 'CLOSED', 'CLOSED');
    my $mark = length $s->error_log;
    $s->start_redis;
    ok($s->wait_redis_connected($mark, 10), 'reconnected');
    is($ua->get($url)->res->headers->header('X-Limit'), 'PASSED',
       'Redis decides again');
};

# A TCP proxy in front of Redis (a forked child) that holds each reply
# $delay seconds: a round trip longer than the lease time
sub delaying_proxy {
    my ($listen, $to, $delay) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $listen, Listen => 16,
                                  ReuseAddr => 1) or die "listen: $!";
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    my $sel = IO::Select->new($l);
    my (%peer, %up, @q);
    # a connection and its peer closed. Copied first: $peer{$fh}, passed
    # in, is an alias of the hash's value, which the first pass deletes
    # (the next pass then iterated a freed value: "Use of freed value in
    # iteration")
    my $drop = sub {
        my @fh = @_;
        for my $fh (@fh) {
            $sel->remove($fh);
            delete $peer{$fh};
            delete $up{$fh};
            close $fh;
        }
    };
    while (1) {
        my $now = Time::HiRes::time();
        while (@q && $q[0][0] <= $now) {
            my (undef, $fh, $buf) = @{ shift @q };
            syswrite($fh, $buf) if $peer{$fh};
        }
        my $wait = @q ? ($q[0][0] - $now) : 1;
        for my $fh ($sel->can_read($wait > 0 ? $wait : 0)) {
            if ($fh == $l) {
                my $c = $l->accept or next;
                my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                              PeerPort => $to)
                    or do { close $c; next };
                @peer{$c, $u} = ($u, $c);
                $up{$u} = 1;
                $sel->add($c, $u);
                next;
            }
            my $n = sysread($fh, my $buf, 65536);
            if (!$n) { $drop->($fh, $peer{$fh} // ()); next }
            if ($up{$fh}) {
                push @q, [Time::HiRes::time() + $delay, $peer{$fh}, $buf];
            } else {
                syswrite($peer{$fh}, $buf);
            }
        }
    }
    POSIX::_exit(0);
}

# A lease asked at sent lasts until sent + lease (Redis counted it so):
# with a round trip over the lease time it arrives expired, its
# admissions paid for and lost, and the next one is asked at once. Redis
# replies here 150 ms late, lease 100 ms: the worker asks for one at a
# time, so Redis charges one admission per request it admits (the key's
# TAT, set far ahead within the burst, grows one interval per charge)
subtest 'replies slower than the lease: Redis charges one per admission'
    => sub {
    plan skip_all => 'the proxy in front of one Redis'
        if $s->topology ne 'single';
    my ($pport, $rport) = LG::Stack::_free_ports(2);
    my $slow_http = <<"CONF";
    linegate_limit_zone slow key=\$arg_k rate=100r/s burst=50000 lease=100ms;
CONF
    my $slow_server = <<"CONF";
        root $dir;
        location /slow/ { linegate_limit zone=slow; try_files /file.txt =404; }
CONF
    my $proxy = delaying_proxy($pport, $rport, 0.15);
    no warnings 'redefine';
    local *LG::Stack::redis_directive = sub { "127.0.0.1:$pport" };
    use warnings 'redefine';
    my $s2 = LG::Stack->new(stub => 0, WORKERS => 1, redis_port => $rport,
                            HTTP_EXTRA => $slow_http,
                            SERVER_EXTRA => $slow_server)->start;
    my $r2 = $s2->redis;
    my $k = "slow$$" . ('x' x 64);    # hashed by every module version
    my $key = rl_key('slow', $k);
    # 100 s ahead, within the 500 s of burst: every charge adds T = 10 ms
    my $tat0 = LG::Limit::redis_now_us($r2) + 100_000_000;
    $r2->set($key, $tat0, 'PX', 600_000);
    my $url = $s2->url("/slow/?k=$k");
    my ($admitted, $other, $end) = (0, 0, Time::HiRes::time() + 1.5);
    my @ua = map { Mojo::UserAgent->new } 1 .. 20;
    my $loop;
    $loop = sub {
        my ($u) = @_;
        return Mojo::Promise->resolve if Time::HiRes::time() > $end;
        return $u->get_p($url)->then(sub {
            $_[0]->res->code == 200 ? $admitted++ : $other++;
            return $loop->($u);
        });
    };
    Mojo::Promise->all(map { $loop->($_) } @ua)->wait;
    Time::HiRes::sleep(0.3);    # the last replies, through the proxy
    my $charged = ($r2->get($key) - $tat0) / 10_000;
    is($other, 0, 'none refused');
    ok($admitted > 40, "$admitted admitted over 1.5 s");
    ok($charged <= $admitted + 2,
       "Redis charged $charged for $admitted admitted");
    $s2->stop;
    kill 'TERM', $proxy;
    waitpid $proxy, 0;
};

done_testing;
