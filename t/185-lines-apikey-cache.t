# The per-worker API-key cache (linegate_api_key_cache): a key the store
# resolved is remembered for at most the configured time, so hot reads skip
# the key lookup, a revoked key is refused within a second on every worker,
# and an unknown key is never remembered.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use LG::Stack;
use LG::Test;
use LG::Lines;
use Mojo::UserAgent;

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $w = $l->workspace('org_kc_a');
my $id = $l->created($w);

# the key reads clients sent while $code ran (MONITOR leaves out what
# scripts run: the workspace rate's GCRA reads its own key with GET)
sub key_lookups {
    my ($code) = @_;
    my ($cmds) = $s->redis_traffic($code);
    return scalar grep { /"GET" "lg:apikey:/i } @$cmds;
}

sub get_with {
    my ($key) = @_;
    return $l->req({Authorization => "Bearer $key"},
                   GET => "/api/line-requests/$id");
}

subtest 'a valid key keeps working across expiries' => sub {
    my $end = time + 1.6;
    my ($ok, $n) = (0, 0);
    while (time < $end) {
        my $tx = get_with($w->{key});
        $n++;
        $ok++ if $tx->res->code == 200;
        sleep 0.05;
    }
    is($ok, $n, "all $n reads over 1.6 s answered 200");
};

# One kept-alive connection (one worker): a read learns the key, then 10
# reads are counted. An entry lasts 500 ms from its fill, so two lookups
# are at least that far apart (0.4 s here: the worker's clock is read
# once per turn of its loop): over the T seconds from before the first
# read to after the last, at most int(T / 0.4) lookups, whatever the
# machine's speed (0 on a run under 0.4 s; a slow run gets a looser bound,
# never a skip). A cache that never kept the key looks it up 10 times.
subtest 'hot reads skip the key lookup' => sub {
    my $ua = Mojo::UserAgent->new;
    my $t0 = time;
    my $first = $ua->get($s->url("/api/line-requests/$id")
                         => {Authorization => "Bearer $w->{key}"});
    is($first->res->code, 200, 'the first read');
    my @codes;
    my $lookups = key_lookups(sub {
        push @codes, $ua->get($s->url("/api/line-requests/$id")
                              => {Authorization => "Bearer $w->{key}"})
                        ->res->code for 1 .. 10;
    });
    my $spent = time - $t0;
    is_deeply(\@codes, [(200) x 10], '10 more reads answered 200');
    my $most = int($spent / 0.4);
    cmp_ok($lookups, '<=', $most, sprintf '10 reads, %d key lookups (at '
           . 'most %d in %.2f s)', $lookups, $most, $spent);
};

subtest 'an unknown key is refused every time' => sub {
    my $bad = 'tuco_' . ('u' x 40);
    for my $i (1 .. 3) {
        my $tx = get_with($bad);
        is($tx->res->code, 401, "unknown key refused ($i)");
        is_deeply($tx->res->json, {error => 'Unauthorized'},
                  "body ($i)");
    }

    # it becomes valid: answered at once, nothing was remembered (a key
    # is its workspace's entry and its lookup, what the operator API
    # writes; a lookup alone never authenticates: include/lr_gate)
    my $digest = sha256_hex($bad);
    $r->set("lg:apikey:$digest", $w->{id});
    is(get_with($bad)->res->code, 401, 'a lookup without its entry: 401');
    $r->hset("lg:{ws:$w->{id}}:keys", 'key_00000000000000aa', $digest);
    is(get_with($bad)->res->code, 200, 'a key added is accepted at once');
    $r->hdel("lg:{ws:$w->{id}}:keys", 'key_00000000000000aa');
    $r->del("lg:apikey:$digest");
};

# poll with the key until it is refused, and stays so, on every worker;
# the seconds it took, and how many reads were still let through
sub refused_after {
    my ($key, $t0) = @_;
    my ($refused_at, $let_through) = (undef, 0);
    while (time - $t0 < 2) {
        if (get_with($key)->res->code == 401) {
            $refused_at //= time - $t0;

        } else {
            undef $refused_at;
            $let_through++;
        }
        last if defined $refused_at && time - $t0 > $refused_at + 0.3;
        sleep 0.02;
    }
    return wantarray ? ($refused_at, $let_through) : $refused_at;
}

sub second_key {
    my $tx = $s->op(POST => "/workspaces/$w->{id}/keys");
    my $k = $tx->res->json;
    ok($k && $k->{key} && $k->{keyId}, 'a second key') or return;

    # warm every worker's cache with it
    is(get_with($k->{key})->res->code, 200, "read $_ with the key")
        for 1 .. 4;

    return $k;
}

subtest 'a key revoked elsewhere in the fleet: refused within 1 s' => sub {
    my $k = second_key() or return;

    # what another nginx's operator API does: the lookup is gone
    $r->del('lg:apikey:' . sha256_hex($k->{key}));
    my $at = refused_after($k->{key}, time);

    ok(defined $at && $at < 1, sprintf('refused after %.2f s', $at // -1));
    is(get_with($k->{key})->res->code, 401, 'still refused');
    is(get_with($w->{key})->res->code, 200, 'the other key still works');
};

subtest 'a key revoked through this nginx: refused at once' => sub {
    my $k = second_key() or return;

    my $tx = $s->op(DELETE => "/workspaces/$w->{id}/keys/$k->{keyId}");
    is($tx->res->code, 200, 'revoked');
    my ($at, $through) = refused_after($k->{key}, time);

    # counted in reads, not seconds: a loaded machine may take longer
    # than 0.2 s to answer the first one
    ok(defined $at && !$through,
       sprintf('refused from the first read (%.2f s, %d let through): '
               . 'every worker forgot', $at // -1, $through));
    is(get_with($w->{key})->res->code, 200, 'the other key still works');
};

# the workspace's rate: its GCRA key (a TAT, us), one emission interval
# T = 60 s / 100000 (the stack's rate) further per request admitted
sub gcra_key { return "lg:{ws:$w->{id}}:gcra" }

subtest 'an expired entry: checked by the GET in its own round trip' => sub {
    # measured again while the window saw a keepalive PING (it may hide
    # a round trip: LG::Stack::redis_traffic)
    my ($tx, $tx2, $cmds, $trips, $pings);
    for (1 .. 5) {
        get_with($w->{key}) for 1 .. 4;
        sleep 0.6;    # past linegate_api_key_cache (500ms)
        ($cmds, $trips, $pings) =
            $s->redis_traffic(sub { $tx = get_with($w->{key}) });
        last unless $pings;
    }
    is($tx->res->code, 200, 'answered');
    # (on a cluster a pipeline writes to each master it touches at once:
    # one read per master, still one round trip)
    my $digest = sha256_hex($w->{key});
    my $nodes = $s->masters_of("lg:apikey:$digest", "lg:{ws:$w->{id}}");
    is($trips, $nodes + grep(/"pexpire"/i, @$cmds), 'one round trip')
        or diag "@$cmds";
    # (on a cluster compared as a set: LG::Stack::pipeline_order)
    is_deeply([$s->pipeline_order(map { /"(\w+)"/ ? uc $1 : '?' } @$cmds)],
              [$s->pipeline_order(qw(GET HVALS EVALSHA HGETALL))],
              'the key, the workspace\'s keys, the rate (GCRA) and the hash')
        or diag "@$cmds";
    is(scalar(grep { /"GET" "lg:apikey:$digest"/ } @$cmds), 1,
       'the key read with the pipeline') or diag "@$cmds";

    # the entry is renewed: of two reads back to back, once expired
    # again, only the first reads the key
    sleep 0.6;
    ($cmds) = $s->redis_traffic(sub {
        $tx = get_with($w->{key});
        $tx2 = get_with($w->{key});
    });
    is($tx->res->code . $tx2->res->code, '200200', 'answered twice');
    is(scalar(grep(/"GET" "lg:apikey/, @$cmds)), 1,
       'renewed: the second read does not read the key') or diag "@$cmds";
};

subtest 'an expired entry of a key revoked meanwhile: 401, not counted' => sub {
    my $k = second_key() or return;

    $r->del('lg:apikey:' . sha256_hex($k->{key}));
    sleep 0.6;

    # the TAT 10 s ahead: nothing expires or refills meanwhile
    my ($sec, $usec) = $r->time;
    my $before = $sec * 1_000_000 + $usec + 10_000_000;
    $r->set(gcra_key(), $before, 'PX', 70_000);

    # the same worker (kept-alive connection) that remembered the key:
    # its pipeline admitted the request, then gives it back (rl_refund)
    my ($cmds) = $s->redis_traffic(sub {
        my $tx = get_with($k->{key});
        is($tx->res->code, 401, 'refused');
        is_deeply($tx->res->json, {error => 'Unauthorized'}, 'body');
    });
    is($r->get(gcra_key()), $before, 'the workspace\'s admission given back')
        or diag "@$cmds";

    # the entry went with that answer: the key's next request is not sent
    # to the workspace again (its rate, its request) but looked up, as a
    # key never seen (before: revalidated against the workspace each time)
    ($cmds) = $s->redis_traffic(sub {
        is(get_with($k->{key})->res->code, 401, 'refused again');
    });
    is_deeply([grep { !/"GET" "lg:apikey:/i } @$cmds], [],
              'only its lookup was sent') or diag "@$cmds";
    is(get_with($w->{key})->res->code, 200, 'the other key still works');
};

subtest 'a cache of two entries: keys beyond it still work' => sub {
    my $small = LG::Stack->new(
        HTTP_EXTRA => 'linegate_api_key_cache_size 2;')->start;
    my $sl = LG::Lines->new($small);
    my @ws = map { $sl->workspace("org_kc_small_$_") } 1 .. 5;
    my @ids = map { scalar $sl->created($_) } @ws;
    my @codes;
    for my $round (1 .. 3) {
        for my $i (0 .. $#ws) {
            push @codes, $sl->get($ws[$i], $ids[$i])->res->code;
        }
    }
    is_deeply(\@codes, [(200) x 15], '5 keys through 2 entries: 15 x 200');
    $small->stop;
};

done_testing;
