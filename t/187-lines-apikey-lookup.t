# An API key no worker cache knows (issue 10: every script one slot): its
# lookup lg:apikey:<digest> is read in its own step (GET), then the
# workspace's script runs with lg:{ws:W} as KEYS[1], checking that the
# workspace still lists the key (lg:{ws:W}:keys); GET by id and by-user
# check it with plain commands instead, as for an expired entry (t/185),
# by-user then reading the lines in pipelines. An unknown key is a 401
# without any script: nothing is counted, nothing written. A lookup whose
# entry is gone (a revocation between its two steps) is refused.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes ();
use Digest::SHA qw(sha256_hex);
use LG::Stack;
use LG::Test qw(redis_dump reads_as);
use LG::Lines;

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $w = $l->workspace('org_lookup_a');
my $id = $l->created($w);

# Redis's commands from clients while $code ran and the round trips the
# request waited for, less the fire-and-forget PEXPIRE of a rate window
# (t/130); a window that saw a keepalive PING is measured again
sub traffic {
    my ($code) = @_;
    my ($cmds, $reads) = $s->redis_traffic($code, again => 1);
    my $after = grep { /"pexpire"/i } @$cmds;
    return ($cmds, $reads - $after);
}

sub names { return [map { /"(\w+)"/ ? uc $1 : '?' } @{ $_[0] }] }

# a key no worker knows: issued now (an operator write also empties every
# worker's cache), never used
sub cold_key {
    my $tx = $s->op(POST => "/workspaces/$w->{id}/keys");
    my $k = $tx->res->json;
    $k->{auth} = {Authorization => "Bearer $k->{key}"};
    $k->{digest} = sha256_hex($k->{key});
    return $k;
}

# $call->($k) with a key no worker knows, measured: measured again with
# another such key when the window saw a keepalive PING
sub cold_traffic {
    my ($call) = @_;
    my ($k, $tx, $cmds, $reads, $pings);
    for (1 .. 5) {
        $k = cold_key();
        ($cmds, $reads, $pings) =
            $s->redis_traffic(sub { $tx = $call->($k) });
        last unless $pings;
    }
    $reads -= grep { /"pexpire"/i } @$cmds;
    return ($tx, $cmds, $reads, $k);
}

# lr_gate's mode: 'c' on a cluster, 'w' on one Redis or Sentinel's master
my $MODE = $s->topology eq 'cluster' ? 'c' : 'w';

subtest 'a cold key: its lookup, then the workspace\'s step' => sub {
    my $hot = $l->answer($l->get($w, $id), 200, 'GET, the first key');

    # GET by id: the lookup, then the pipeline of an expired entry (the
    # lookup again and the workspace's keys, with the rate and the hash)
    my ($tx, $cmds, $trips, $k) = cold_traffic(sub { $l->get($_[0], $id) });
    is_deeply($l->answer($tx, 200, 'GET, a cold key'), $hot,
              'the same answer');
    # (on a cluster a pipeline writes to each master it touches at once:
    # one read per master, still one round trip)
    my $nodes = $s->masters_of("lg:apikey:$k->{digest}", "lg:{ws:$w->{id}}");
    is($trips, 1 + $nodes, 'two round trips') or diag "@$cmds";
    like($cmds->[0] // '', qr/"GET" "lg:apikey:$k->{digest}"\s*$/,
         'the lookup first, alone');
    is_deeply([$s->pipeline_order(@{ names($cmds) }[1 .. $#$cmds])],
              [$s->pipeline_order(qw(GET HVALS EVALSHA HGETALL))],
              'then the key, the workspace\'s keys, the rate and the hash')
        or diag "@$cmds";
    is(scalar(grep { /"EVALSHA" "[0-9a-f]{40}" "1" "lg:\{ws:$w->{id}\}:gcra"/ }
                   @$cmds), 1,
       'the rate alone in a script (rl_gcra), no lr_get.lua')
        or diag "@$cmds";
    is(scalar(grep { /"HVALS" "lg:\{ws:$w->{id}\}:keys"/ } @$cmds), 1,
       'checking the workspace still lists the key') or diag "@$cmds";

    # learned: the next GET of the key on that worker is the hot path
    # (several tries: the next request may go to the other worker)
    for (1 .. 8) {
        ($cmds) = traffic(sub { $tx = $l->get($k, $id) });
        last unless grep { /"GET" "lg:apikey:/ } @$cmds;
    }
    is_deeply(names($cmds), [qw(EVALSHA HGETALL)], 'learned: the hot path')
        or diag "@$cmds";

    # by-user: the lookup, then the pipeline of an expired entry with the
    # index (as GET by id), then the hashes: no script walks the
    # workspace's lines (lr_list.lua, one command as long as the
    # workspace is large, Redis blocked meanwhile: t/190)
    ($tx, $cmds, $trips, $k) = cold_traffic(sub { $l->list($_[0]) });
    is($tx->res->code, 200, 'by-user');
    is_deeply([$s->pipeline_order(@{ names($cmds) })],
              [$s->pipeline_order(qw(GET GET HVALS EVALSHA ZRANGE HGETALL))],
              'by-user: lookup, the key, its workspace\'s keys, the rate, '
              . 'the index, then the line') or diag "@$cmds";
    is(scalar(grep { /"EVALSHA" "[0-9a-f]{40}" "1" "lg:\{ws:$w->{id}\}:gcra"/ }
                   @$cmds), 1,
       'by-user: the rate alone in a script (rl_gcra), no lr_list.lua')
        or diag "@$cmds";
    is(scalar(grep { /"HVALS" "lg:\{ws:$w->{id}\}:keys"/ } @$cmds), 1,
       'by-user: checking the workspace still lists the key')
        or diag "@$cmds";
    $nodes = $s->masters_of("lg:apikey:$k->{digest}", "lg:{ws:$w->{id}}");
    is($trips, 2 + $nodes, 'by-user: three round trips');
    # (measured once: its checks count no round trips, and a retry would
    # create more lines, past the plan's included ones into a 409)
    my $ck = cold_key();
    ($cmds) = $s->redis_traffic(sub { $tx = $l->create($ck) });
    is($tx->res->code, 201, 'create');
    # (the owner index lg:line:<id> is its own step, before the script;
    # on a cluster with the set-up relay's and the journal's members, and
    # neither the stream nor the journal is among the script's keys)
    my @n = @{ names($cmds) };
    my ($ev) = grep { $n[$_] eq 'EVALSHA' } 0 .. $#n;
    ok($n[0] eq 'GET' && defined $ev && grep({ $n[$_] eq 'SET' } 1 .. $ev - 1),
       'create: lookup, its index, then its script') or diag "@$cmds";
    my $nkeys = $MODE eq 'c' ? 9 : 11;
    like($cmds->[$ev // 0] // '',
         qr/"EVALSHA" "[0-9a-f]{40}" "$nkeys" "lg:\{ws:$w->{id}\}" /,
         'create: its KEYS[1] the workspace');

    # once resolved, the worker knows the key: the hot path, unchanged
    $k = cold_key();
    for (1 .. 5) {
        $l->get($k, $id) for 1 .. 4;
        ($cmds, $trips) = traffic(sub { $tx = $l->get($k, $id) });
        last unless grep { /"GET" "lg:apikey:/ } @$cmds;
    }
    is_deeply(names($cmds), [qw(EVALSHA HGETALL)], 'then: the hot path')
        or diag "@$cmds";
    is($trips, 1, 'one round trip');
};

subtest 'an unknown key: 401 from its lookup, nothing run' => sub {
    my $bad = {Authorization => 'Bearer tuco_' . ('z' x 40)};
    my $before = redis_dump($r);
    my ($tx, $cmds, $trips);
    for my $call ([GET => "/api/line-requests/$id"],
                  [GET => '/api/line-requests/not-an-id'],
                  [GET => '/api/lines/by-user'],
                  [POST => '/api/line-requests', {}],
                  [POST => "/api/line-requests/$id",
                   {action => 'cancel'}]) {
        my ($m, $path, $body) = @$call;
        ($cmds, $trips) = traffic(sub {
            $tx = $l->req($bad, $m, $path, $body);
        });
        is($tx->res->code, 401, "$m $path: 401");
        is_deeply($tx->res->json, {error => 'Unauthorized'}, 'body');
        is_deeply(names($cmds), ['GET'], 'the lookup only') or diag "@$cmds";
        is($trips, 1, 'one round trip');
    }
    is_deeply(redis_dump($r), $before, 'nothing written, nothing counted');
};

subtest 'a lookup its workspace no longer lists: refused' => sub {
    my $k = cold_key();
    my $gcra = "lg:{ws:$w->{id}}:gcra";
    # the revocation's first step only (the entry), its lookup still there
    $r->hdel("lg:{ws:$w->{id}}:keys", $k->{keyId});
    ok($r->exists("lg:apikey:$k->{digest}"), 'the lookup is still there');
    my $before = redis_dump($r);
    for my $try (1 .. 3) {
        my $tx = $l->get($k, $id);
        is($tx->res->code, 401, "refused ($try)");
        is_deeply($tx->res->json, {error => 'Unauthorized'}, 'body');
    }
    is($l->create($k)->res->code, 401, 'a create too');
    # (by-user's pipeline admits it, then gives the admission back)
    is($l->list($k)->res->code, 401, 'a by-user too');
    # the create's owner index, written before its script refused, is
    # taken back by a durable DEL queued before the answer (on a cluster
    # also its set-up and journal members, by durable ZREMs on the fleet's
    # node): the dump as before once they have landed
    is_deeply(reads_as(sub { redis_dump($r) }, $before, 10), $before,
              'nothing written, nothing counted');
    is($l->get($w, $id)->res->code, 200, 'the workspace\'s other key works');
};

# a worker's entry past its time is checked by the GET's pipeline: the
# lookup and the workspace's keys, read with the work (t/185)
subtest 'an expired entry of a key its workspace no longer lists' => sub {
    my $k = cold_key();
    is($l->get($k, $id)->res->code, 200, "read $_ with the key")
        for 1 .. 4;
    $r->hdel("lg:{ws:$w->{id}}:keys", $k->{keyId});
    Time::HiRes::sleep(0.6);    # past linegate_api_key_cache (500ms)

    # the TAT 10 s ahead: nothing expires or refills meanwhile
    my $gcra = "lg:{ws:$w->{id}}:gcra";
    my ($sec, $usec) = $r->time;
    my $before = $sec * 1_000_000 + $usec + 10_000_000;
    $r->set($gcra, $before, 'PX', 70_000);

    my $tx = $l->get($k, $id);
    is($tx->res->code, 401, 'refused');
    is_deeply($tx->res->json, {error => 'Unauthorized'}, 'body');
    is($r->get($gcra), $before, 'the workspace\'s admission given back');
    is($l->get($w, $id)->res->code, 200, 'the other key still works');
};

done_testing;
