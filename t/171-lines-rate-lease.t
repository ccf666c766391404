# linegate_workspace_rate ... lease=: a worker takes several of the
# workspace's admissions in one rl_gcra decision and spends them on its
# GETs by id without the EVALSHA (issue 14). The rate still holds: with
# rate n per w seconds (burst n - 1) and lease L, any t seconds admit at
# most n + n * (t + L) / w requests of a workspace (docs/directives.md);
# a rate spaced wider than the lease is decided request by request.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes ();
use Mojo::Promise;
use Mojo::UserAgent;
use LG::Stack;
use LG::Lines;
use LG::Limit qw(lease_counts_down lease_holds_admissions evalsha_calls);

# n GETs of one line request, one after the other: (EVALSHA calls, txs)
sub gets {
    my ($l, $w, $id, $n) = @_;
    my $before = evalsha_calls($l->redis);
    my @tx = map { $l->get($w, $id) } 1 .. $n;
    return (evalsha_calls($l->redis) - $before, @tx);
}

# the decisions Redis made: rl_gcra's EVALSHA, or the idle path's SET
sub decisions {
    my ($r) = @_;
    my $st = $r->info('commandstats');
    my $n = 0;
    for my $c (qw(evalsha set)) {
        $n += (($st->{"cmdstat_$c"} // '') =~ /calls=(\d+)/)[0] // 0;
    }
    return $n;
}

sub codes {
    my ($code, @tx) = @_;
    return scalar grep { $_->res->code == $code } @tx;
}

sub rejected_ok {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is_deeply($tx->res->json,
              {error => 'Rate limit exceeded', code => 'RATE_LIMITED'},
              "$name: the usual body");
    like($tx->res->headers->header('Retry-After') // '', qr/^\d+$/,
         "$name: Retry-After");
    like($tx->res->headers->header('RateLimit') // '',
         qr/^"workspace";r=0;t=\d+$/, "$name: RateLimit");
}

subtest 'a busy workspace: one EVALSHA per lease, not per GET' => sub {
    my $s = LG::Stack->new(WS_RATE => '600000r/m lease=200ms')->start;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_lease_hot');
    my $id = $l->created($w);

    my ($calls, @tx) = gets($l, $w, $id, 400);
    is(codes(200, @tx), 400, 'all 400 answered 200');
    ok($calls < 100, "$calls EVALSHA for 400 GETs");
    is($tx[-1]->res->headers->header('RateLimit-Policy'),
       '"workspace";q=600000;w=60', 'RateLimit-Policy');
    like($tx[-1]->res->headers->header('RateLimit') // '',
         qr/^"workspace";r=\d+;t=\d+$/, 'RateLimit');
    like($tx[-1]->res->body, qr/"\Q$id\E"/, 'the line request');

    # by-user shares the pipeline
    my $before = evalsha_calls($s->redis);
    my @list = map { $l->list($w) } 1 .. 100;
    my $c = evalsha_calls($s->redis) - $before;
    is(codes(200, @list), 100, 'by-user: all 200');
    ok($c < 50, "by-user: $c EVALSHA for 100 GETs");

    # a bad value is refused at nginx -t, naming it
    for my $bad ('lease=0', 'lease=2s', 'lease=x', 'burst=3') {
        my ($rc, $out) = $s->nginx_t($s->render(WS_RATE => "10r/m $bad"));
        isnt($rc, 0, "nginx -t refuses $bad");
        like($out, qr/\Q$bad\E/, "the message names $bad");
    }
    $s->stop;
};

subtest 'two busy workspaces alternating keep their leases' => sub {
    # the worker's table: 4096 sets, 2 leases each; a direct-mapped table
    # (2048) dropped one key's lease for the other's at every request of
    # two keys of one slot: an EVALSHA per GET. Which set a key falls in
    # is the worker's secret (SipHash under a key of its own), so two
    # keys of one set cannot be picked from here: t/404 checks that keys
    # chosen from the unkeyed hash no longer share a hot key's set
    my @pair = (1, 2);
    my $s = LG::Stack->new(WS_RATE => '600000r/m lease=200ms',
                           WORKERS => 1)->start;
    my $l = LG::Lines->new($s);
    my @ws = map { $l->workspace("org_set$_") } @pair;
    my @ids = map { scalar $l->created($_) } @ws;
    my $before = evalsha_calls($s->redis);
    my @tx = map { $l->get($ws[$_ % 2], $ids[$_ % 2]) } 0 .. 399;
    my $calls = evalsha_calls($s->redis) - $before;
    is(codes(200, @tx), 400, 'all 400 answered 200');
    ok($calls < 100, "$calls EVALSHA for 400 GETs, the two alternating");
    $s->stop;
};

subtest 'a rate spaced wider than the lease: each GET decided' => sub {
    # 10r/m: T = 6 s > lease, a lease holds one admission: the bound is
    # the plain GCRA's, 10 at once
    my $s = LG::Stack->new(WS_RATE => '10r/m lease=1s')->start;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_lease_slow');
    my $id = $l->created($w);    # 1 of 10

    my $before = evalsha_calls($s->redis);
    my @tx = $l->parallel(map { [$w, GET => "/api/line-requests/$id"] }
                          1 .. 30);
    my $calls = evalsha_calls($s->redis) - $before;
    is(codes(200, @tx), 9, 'the rest of the burst, 9, admitted');
    is(codes(429, @tx), 21, 'the others 429');
    is($calls, 30, 'one EVALSHA per GET');
    rejected_ok((grep { $_->res->code == 429 } @tx)[0], 'beyond the burst');
    $s->stop;
};

subtest 'leases within n + n (t + L) / w' => sub {
    # 50r/s, burst 49, lease 200 ms: a lease holds at most 10
    my $s = LG::Stack->new(WS_RATE => '50r/s lease=200ms')->start;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_lease_bound');
    my $t0 = Time::HiRes::time();
    my $id = $l->created($w);    # 1, counted in t
    my @tx;
    while (Time::HiRes::time() - $t0 < 1.5) {
        push @tx, $l->parallel(map { [$w, GET => "/api/line-requests/$id"] }
                               1 .. 8);
    }
    my $secs = Time::HiRes::time() - $t0;
    my $ok = codes(200, @tx) + 1;
    my $no = codes(429, @tx);
    is($ok - 1 + $no, scalar @tx, 'only 200 and 429');
    my $bound = int(50 + 50 * ($secs + 0.2));
    ok($ok <= $bound, "admitted $ok <= $bound in "
                      . sprintf('%.2f s', $secs));
    ok($ok >= 50, "at least the burst ($ok)");
    ok($no > 0, "the rest rejected ($no of " . scalar(@tx) . ')');
    rejected_ok((grep { $_->res->code == 429 } @tx)[0], 'rejected');
    $s->stop;
};

# 600r/m (T = 100 ms, burst 600) with leases of 200 ms
sub idle_stack {
    my $s = LG::Stack->new(WS_RATE => '600r/m lease=200ms',
        HTTP_EXTRA => 'linegate_api_key_cache 1s 5m;')->start;
    return ($s, LG::Lines->new($s), $s->redis);
}

# workspace $name with a line request; both workers' key caches and
# leases warmed, then left until the rate's key and every lease's
# decision are over
sub idle_workspace {
    my ($l, $name) = @_;
    my $w = $l->workspace($name);
    my $id = $l->created($w);
    $l->get($w, $id) for 1 .. 8;
    Time::HiRes::sleep(1.5);
    return ($w, $id);
}

# another nginx spent workspace $name's burst: its key busy for 30 s
sub spent {
    my ($r, $name) = @_;
    my ($sec, $usec) = $r->time;
    my $tat = $sec * 1_000_000 + $usec + 599 * 100_000 + 30_000_000;
    $r->set("lg:{ws:$name}:gcra", $tat, 'PX', 90_000);
    return $tat;
}

subtest 'an idle workspace: one SET ... NX admits, no script' => sub {
    plan skip_all => 'commands are counted on one Redis'
        if ($ENV{LG_REDIS} // '') eq 'cluster';
    # A worker whose last decision of the key is over expects the key gone (rl_gcra writes it to expire just
    # past its TAT): the plain SET that admits an idle key, instead of
    # the script (about ten times Redis's work)
    my ($s, $l, $r) = idle_stack();
    my ($name, $tx, $cmds, $trips, $pings);
    # a keepalive PING in the window: again, with a workspace the workers
    # have not decided since their warm-up
    for my $try (1 .. 5) {
        $name = "org_idle$try";
        my ($w, $id) = idle_workspace($l, $name);
        ($cmds, $trips, $pings) =
            $s->redis_traffic(sub { $tx = $l->get($w, $id) });
        last unless $pings;
    }
    is($tx->res->code, 200, 'admitted');
    # the key's entry may be revalidated in the same write (GET, HVALS)
    my @names = grep { !/^(?:GET|HVALS)$/ }
                map { /"(\w+)"/ ? uc $1 : '?' } @$cmds;
    is_deeply(\@names, [qw(SET HGETALL)], 'SET and the hash, no EVALSHA')
        or diag "@$cmds";
    my ($set) = grep { /"SET"/ } @$cmds;
    my ($tat_sent, $px) = ($set // '')
        =~ /"SET" "lg:\{ws:\Q$name\E\}:gcra" "(\d{16})" "PX" "(\d+)" "NX"/;
    ok($px, 'SET key TAT PX ms NX') or diag $set;
    # n admitted (the lease asked for): TAT now + n T, expiring 1 ms
    # after, as rl_gcra writes an idle key
    my $n = int((($px // 1) - 1) / 100);
    ok($n >= 1 && $n <= 20, "n = $n, at most what a 200 ms lease holds");
    # r: the burst less the n admitted, plus the n - 1 the worker holds
    # (they pass without asking Redis), as rl_gcra's grant answers
    is($tx->res->headers->header('RateLimit') // '',
       sprintf('"workspace";r=%d;t=%d', 599, int(($n * 100 + 999) / 1000)),
       'RateLimit: the burst less this GET, back in full in n T');
    is($trips, 1, 'one round trip');
    # MONITOR stamps the SET with Redis's clock as it ran
    my ($ran) = ($set // '') =~ /^\+?(\d+\.\d+)/;
    my $lead = ($tat_sent // 0) - int(($ran // 0) * 1_000_000);
    ok(abs($lead - $n * 100_000) <= 50_000,
       'the TAT: now (the worker\'s clock) plus n T')
        or diag "TAT - now: $lead us";
    $s->stop;
};

subtest 'a busy key the idle SET finds: rl_gcra decides' => sub {
    plan skip_all => 'commands are counted on one Redis'
        if ($ENV{LG_REDIS} // '') eq 'cluster';
    # another nginx spent the burst since this worker's last decision:
    # SET ... NX writes nothing, and the request is decided again by the
    # script, which refuses it
    my ($s, $l, $r) = idle_stack();
    my ($name, $tat, $tx, $cmds, $trips, $pings);
    # a keepalive PING in the window: again, with a workspace the workers
    # believe idle (the refusal taught them this one is not)
    for my $try (1 .. 5) {
        $name = "org_idle_busy$try";
        my ($w, $id) = idle_workspace($l, $name);
        $tat = spent($r, $name);
        ($cmds, $trips, $pings) =
            $s->redis_traffic(sub { $tx = $l->get($w, $id) });
        last unless $pings;
    }
    is($tx->res->code, 429, 'refused');
    rejected_ok($tx, 'refused by the script');
    my $after = $tx->res->headers->header('Retry-After') // 0;
    ok($after >= 29 && $after <= 31, "Retry-After $after s");
    my @names = grep { !/^(?:GET|HVALS)$/ }
                map { /"(\w+)"/ ? uc $1 : '?' } @$cmds;
    is_deeply([@names[0, 1]], [qw(SET HGETALL)], 'the idle SET first')
        or diag "@$cmds";
    ok(grep({ /"EVALSHA"/ } @$cmds), 'then the script') or diag "@$cmds";
    is($trips, 2, 'two round trips');
    is($r->get("lg:{ws:$name}:gcra"), $tat,
       'the key as the other nginx left it');
    $s->stop;
};

subtest 'a workspace over its rate: its refusals are the script\'s alone' => sub {
    plan skip_all => 'commands are counted on one Redis'
        if ($ENV{LG_REDIS} // '') eq 'cluster';
    # a refusal tells the worker until when the key is busy: the next
    # requests of a client over its rate do not try the idle SET first
    # (each would have cost a round trip and a command more)
    my ($s, $l, $r) = idle_stack();
    my ($w, $id) = idle_workspace($l, 'org_idle_over');
    spent($r, 'org_idle_over');
    my @tx = map { $l->get($w, $id) } 1 .. 4;
    is(scalar(grep { $_->res->code == 429 } @tx), 4, 'all four refused');
    my $tx;
    my ($cmds, $trips) = $s->redis_traffic(sub { $tx = $l->get($w, $id) },
                                           again => 1);
    is($tx->res->code, 429, 'refused again');
    ok(!grep({ /"SET" "lg:\{ws:org_idle_over\}:gcra"/ } @$cmds),
       'no idle SET') or diag "@$cmds";
    is($trips, 1, 'one round trip') or diag "@$cmds";
    $s->stop;
};

# 120r/m (T = 500 ms, tolerance 119 T), lease=1s: a lease holds at most
# 2. The workspace's key set so that $can admissions pass now (Redis's
# clock, as rl_gcra's GET decisions read it), the next one $left x T
# later than the last of them
sub ws_can {
    my ($r, $name, $can, $left) = @_;
    my ($sec, $usec) = $r->time;
    my $tat = $sec * 1_000_000 + $usec + 119 * 500_000
              - int(($can - $left) * 500_000);
    $r->set("lg:{ws:$name}:gcra", $tat, 'PX', 90_000);
}

# The worker's next lease in flight and its current one spent, a GET is
# decided alone (want 1); the lease, answered just before it, takes the
# workspace's last admissions and Redis refuses it. The worker holds one
# of that lease, paid for in Redis: the GET takes it instead of a 429
# (as linegate_limit's, t/404). Redis is paused so that both decisions
# are in flight together; one worker, whose lease the checks count on.
subtest 'a decision refused while the lease holds admissions' => sub {
    my $s = LG::Stack->new(WS_RATE => '120r/m lease=1s', WORKERS => 1)
        ->start;
    my $l = LG::Lines->new($s);
    my $r = $s->redis;
    my $name = 'org_lease_pair';
    my $w = $l->workspace($name);
    my $id = $l->created($w);
    my $get = sub { $l->get($w, $id)->res->code };

    # the key learned by the worker; its leases over, the next one of 1
    is($get->(), 200, 'the key learned');
    Time::HiRes::sleep(1.1);

    my $path = $s->url("/api/line-requests/$id");
    lease_holds_admissions(
        get   => $get,
        can   => sub { ws_can($r, $name, @_) },
        pause => sub { $r->client('PAUSE', 200) },
        race  => sub { $_[0]->get_p($path => $w->{auth}) },
        what  => 'workspace');
    $s->stop;
};

# RateLimit's r of a leased workspace is what Redis said would pass, plus
# the admissions the worker holds: a GET the lease admits has one less
# than the GET before it (the same worker's: one worker), as
# linegate_limit's (t/404). 1200r/m: 20 a second, T = 50 ms, a lease of
# at most 20; r is never cut to q (1200)
subtest 'r counts down as the lease is spent' => sub {
    my $s = LG::Stack->new(WS_RATE => '1200r/m lease=1s', WORKERS => 1)
        ->start;
    my $l = LG::Lines->new($s);
    my $w = $l->workspace('org_lease_count');
    my $id = $l->created($w);
    $l->get($w, $id);    # the key learned
    lease_counts_down(sub { $l->get($w, $id)->res },
                      sub { decisions($s->redis) }, 20);
    $s->stop;
};

done_testing();
