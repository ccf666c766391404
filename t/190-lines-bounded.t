# Bounded work per request (issue 13): no request walks every request a
# workspace ever made. A workspace whose history holds 100,000 canceled
# requests costs Redis what a fresh workspace costs on create and by-user
# (commands counted with INFO commandstats, which counts the commands
# scripts run too: no timing); the set-up stream is capped.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $HISTORY = 100_000;

# the commands Redis ran while $code ran, scripts' own included (the
# workers' keepalive PINGs and this helper's INFO/CONFIG left out)
sub cost {
    my ($code) = @_;
    my $calls = sub {
        my $st = $r->info('commandstats');
        my $n = 0;
        for my $k (keys %$st) {
            next if $k =~ /cmdstat_(?:ping|info|config)\b/;
            $n += $1 if $st->{$k} =~ /calls=(\d+)/;
        }
        return $n;
    };
    # the sentinels' and replicas' commands held back (LG_REDIS=sentinel)
    return $s->quiet(sub {
        my $before = $calls->();
        $code->();
        sleep 0.2;    # fire-and-forget commands land
        return $calls->() - $before;
    });
}

# the history is what the API leaves: create -> cancel, three times
my $old = $l->workspace('org_history');
my @canceled;
for (1 .. 3) {
    my ($id) = $l->awaiting($old);
    $l->answer($l->manage($old, $id, 'cancel'), 200, 'canceled');
    push @canceled, $id;
}

my $lr = $l->lr($old, $canceled[0]);
is($lr->{provisioningStatus}, 'canceled', 'a canceled request is kept');
my $indexed = defined $r->zscore("lg:{ws:org_history}:lines", $canceled[0]);
ok(!$indexed, 'a canceled request leaves the index of live requests');
$l->answer($l->get($old, $canceled[0]), 200, 'and is still read by id');

# ... then 100,000 more of the same shape, written as the API wrote those
# (in slices: Redis keeps answering the workers' keepalive PINGs)
# (on a cluster the owner indexes lg:line:<id>, another slot each, are
# left out: neither by-user nor create reads them)
my @seed = (1, 'lg:{ws:org_history}', $s->topology eq 'cluster' ? 0 : 1);
$r->eval(<<'LUA', @seed[0, 1], $_, $_ + 4999, $indexed ? 1 : 0, $seed[2], %$lr)
local from, to, indexed = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local f = {}
for i = 5, #ARGV do f[#f + 1] = ARGV[i] end
for i = from, to do
    local id = string.format('%024x', i)
    redis.call('HSET', 'lg:{ws:org_history}:lr:' .. id, unpack(f))
    if ARGV[4] == '1' then
        redis.call('SET', 'lg:line:' .. id, 'org_history')
    end
    if indexed == '1' then
        redis.call('ZADD', 'lg:{ws:org_history}:lines', i, id)
    end
end
return 1
LUA
    for map { 1 + 5000 * $_ } 0 .. $HISTORY / 5000 - 1;
is($r->dbsize > $HISTORY, 1, 'the history is written');

my $fresh = $l->workspace('org_fresh');

# each has one live line of its own
$l->answer($l->create($_, body()), 201, "$_->{id}: a first line")
    for $old, $fresh;

my %cost;
for my $w ($old, $fresh) {
    $l->answer($l->list($w), 200, "$w->{id}: by-user, warm");
    $cost{$w->{id}}{create} = cost(sub {
        $l->answer($l->create($w, body()), 201, "$w->{id}: create");
    });
    $cost{$w->{id}}{list} = cost(sub {
        my $b = $l->answer($l->list($w), 200, "$w->{id}: by-user");
        is(scalar @{ $b->{lines} }, 2, "$w->{id}: its two live lines");
    });
}

note explain \%cost;
cmp_ok($cost{org_history}{create}, '<=', $cost{org_fresh}{create} + 2,
       'create costs what it costs in a fresh workspace');
cmp_ok($cost{org_history}{list}, '<=', $cost{org_fresh}{list} + 2,
       'by-user costs what it costs in a fresh workspace');

# a creation's own budget (Redis's time is what bounds creations,
# docs/performance.md): the owner index's SET, EVALSHA, and in the
# script TIME and the rate's SET, EXISTS, the workspace's HMGET, :live's
# ZRANGE, :lines' ZRANGEBYSCORE since the marker, the live line's
# HMGET, GET of :pending, HSET, ZADD of :lines, one ZADD of :live (the
# request and the marker), XADD. 16 before :live's read and writes were
# one command each. A cluster adds five: lr_here's EXISTS of the live
# line, and the set-up and journal members nginx writes in their own
# slot before the script and takes out after it (the set-up entry nginx
# appends is the script's XADD on one Redis)
# Counted for three workspaces, the least kept: other clients' commands
# in the window (a sentinel's, a worker's periodic reads) only add.
my $budget = ($ENV{LG_REDIS} // '') eq 'cluster' ? 19 : 14;
my @second;
for my $n (1 .. 3) {
    my $w = $l->workspace("org_budget$n");
    $l->answer($l->create($w, body()), 201, "org_budget$n: a first line");
    push @second, cost(sub {
        $l->answer($l->create($w, body()), 201, "org_budget$n: a second");
    });
}
my ($least) = sort { $a <=> $b } @second;
cmp_ok($least, '<=', $budget,
       "a second line's creation: at most $budget Redis commands (@second)");

# A workspace with many live lines (paid add-ons, failed set-ups): a
# by-user with an API key no worker knows read them all in one script
# (lr_list.lua), one command as long as the workspace is large (2,000
# lines: 42 ms, every other client of Redis waiting), every
# linegate_api_key_cache (500 ms) per worker of a polling client. Each
# hash is now a command of its own, in pipelines of at most 64.
subtest 'by-user with a key no worker knows: no script walks the lines'
    => sub {
    my $w = $l->workspace('org_many');
    my ($id) = $l->created($w);
    my %tpl = $r->hgetall("lg:{ws:org_many}:lr:$id");
    $r->eval(<<'LUA', 1, 'lg:{ws:org_many}', %tpl);
for i = 1, 149 do
    local id = string.format('%024x', 0xa11000 + i)
    redis.call('HSET', KEYS[1] .. ':lr:' .. id, unpack(ARGV))
    redis.call('ZADD', KEYS[1] .. ':lines', 1900000000000 + i, id)
end
return 1
LUA
    my $key = $s->op(POST => '/workspaces/org_many/keys')->res->json->{key};
    my $tx;
    my ($cmds) = $s->redis_traffic(sub {
        $tx = $l->list({Authorization => "Bearer $key"});
    });
    my $b = $l->answer($tx, 200, 'by-user, a cold key');
    is(scalar @{ $b->{lines} }, 150, 'its 150 lines');
    is(scalar(grep { /"HGETALL"/i } @$cmds), 150,
       'each hash read by a command of its own') or diag "@$cmds[0 .. 5]";
    my @ev = grep { /"EVALSHA"/i } @$cmds;
    is(scalar @ev, 1, 'one script') or diag "@ev";
    like($ev[0] // '', qr/"[0-9a-f]{40}" "1" "lg:\{ws:org_many\}:gcra"/,
         'the rate (rl_gcra), not lr_list.lua');
};

subtest 'the set-up stream is capped' => sub {
    $r->eval(<<'LUA', 1, 'lg:provisioning') for 1 .. 20;
for i = 1, 5010 do
    redis.call('XADD', KEYS[1], '*', 'workspace', 'x', 'id', i)
end
return 1
LUA
    my $before = $r->xlen('lg:provisioning');
    my $w = $l->workspace('org_stream');
    $l->created($w);
    # (on a cluster nginx appends the entry just after the answer)
    my $after;
    for (1 .. 50) {
        $after = $r->xlen('lg:provisioning');
        last if $after != $before;
        sleep 0.1;
    }
    cmp_ok($after, '<', $before, "trimmed on XADD ($before -> $after)");
    cmp_ok($after, '>=', 100_000, 'to about its cap, not below');
    my ($last) = $r->xrevrange('lg:provisioning', '+', '-', 'COUNT', 1);
    is({@{ $last->[1] }}->{workspace}, 'org_stream', 'the new line is in');
};

subtest 'an index that still holds canceled requests is cleaned once' => sub {
    my $w = $l->workspace('org_legacy');
    my ($id) = $l->awaiting($w);
    $l->answer($l->manage($w, $id, 'cancel'), 200, 'canceled');
    # as an index written before canceled requests left it (so before
    # :live, which the add-on's creation built: a creation walks :lines
    # only to build it)
    $r->zadd("lg:{ws:org_legacy}:lines", 1, $id);
    $r->del("lg:{ws:org_legacy}:live");
    $l->answer($l->create($w, body()), 201, 'create');
    ok(!defined $r->zscore("lg:{ws:org_legacy}:lines", $id),
       'create took it out');
    $r->zadd("lg:{ws:org_legacy}:lines", 1, $id);
    my $b = $l->answer($l->list($w), 200, 'by-user');
    is(scalar @{ $b->{lines} }, 1, 'lists the live line only');
    # a ZREM sent without waiting, after the answer
    ok(eventually(sub { !defined $r->zscore("lg:{ws:org_legacy}:lines",
                                            $id) }, 5),
       'by-user took it out');
};

# Failed lines (issue 14): failed is an end state, and :lines keeps them
# for by-user (SPEC 2.8) for ever; a creation walked them all at every
# creation (docs/performance.md: 8.8 ms of Redis at 5,000). It counts
# the workspace's live requests from lg:{ws:W}:live now.
sub live_ids {
    my ($ws) = @_;
    # its marker left out ('built': the index is built)
    return [sort grep { $_ ne 'built' } $r->zrange("lg:{ws:$ws}:live", 0,
                                                   -1)];
}

sub fail_line {
    my ($id) = @_;
    answer_is($s->op(POST => "/lines/$id/failed", {reason => 'no number'}),
              200, "$id failed");
}

subtest 'a creation does not walk the failed lines' => sub {
    my %w = map { $_ => $l->workspace($_) } qw(org_failed org_nofail);
    my %tpl;
    for my $ws (sort keys %w) {
        my $f = $l->created($w{$ws});
        fail_line($f);
        %tpl = $r->hgetall("lg:{ws:$ws}:lr:$f");
    }
    is($tpl{provisioningStatus}, 'failed', 'a failed line');

    # 2,000 more, as the API leaves them: in :lines, for by-user
    $r->eval(<<'LUA', 1, 'lg:{ws:org_failed}', %tpl);
for i = 1, 2000 do
    local id = string.format('%024x', 0xfa1000 + i)
    redis.call('HSET', KEYS[1] .. ':lr:' .. id, unpack(ARGV))
    redis.call('ZADD', KEYS[1] .. ':lines', 1900000000000 + i, id)
end
return 1
LUA

    my %cost;
    for my $ws (sort keys %w) {
        $cost{$ws} = cost(sub {
            my $b = $l->answer($l->create($w{$ws}, body()), 201,
                               "$ws: create");
            is($b->{line}{provisioningStatus}, 'provisioning',
               "$ws: included (a failed line is not counted)");
        });
    }
    note explain \%cost;
    cmp_ok($cost{org_failed}, '<=', $cost{org_nofail} + 2,
           'create costs what it costs without 2,000 failed lines');

    my $b = $l->answer($l->list($w{org_failed}), 200, 'by-user');
    is(scalar @{ $b->{lines} }, 2002, 'by-user lists the failed lines');
};

subtest 'a request leaves :live when it fails or is canceled' => sub {
    my $w = $l->workspace('org_live');
    my $p1 = $l->created($w);
    my $p2 = $l->created($w);
    is_deeply(live_ids('org_live'), [sort $p1, $p2], 'both live');

    fail_line($p1);
    is_deeply(live_ids('org_live'), [$p2], 'the failed one left :live');
    ok(defined $r->zscore('lg:{ws:org_live}:lines', $p1),
       'and stays in :lines');

    my ($p3, $b) = $l->created($w);
    is($b->{line}{provisioningStatus}, 'provisioning',
       'one live phone line: the next is included');
    my $p4;
    ($p4, $b) = $l->created($w);
    is($b->{line}{provisioningStatus}, 'awaiting_payment',
       'two: the next is an add-on');
    is_deeply(live_ids('org_live'), [sort $p2, $p3, $p4],
              'awaiting payment is live');
    $l->answer($l->manage($w, $p4, 'cancel'), 200, 'canceled');
    is_deeply(live_ids('org_live'), [sort $p2, $p3],
              'the canceled one left :live');

    $b = $l->answer($l->list($w), 200, 'by-user');
    is_deeply([map { $_->{_id} } @{ $b->{lines} }], [$p1, $p2, $p3],
              'by-user: every line but the canceled one, oldest first');
};

subtest 'a workspace written before :live: built once, from :lines' => sub {
    my $tw = $l->workspace('org_tpl');
    my $t = $l->created($tw);
    my %tpl = $r->hgetall("lg:{ws:org_tpl}:lr:$t");
    my $w = $l->workspace('org_before');
    my $ws = 'lg:{ws:org_before}';

    # an active and a provisioning phone line, 300 failed ones and a
    # canceled one left in the index, no :live
    my @ids = map { sprintf '%024x', 0xbef000 + $_ } 1 .. 303;
    my @st = ('active', 'provisioning', ('failed') x 300, 'canceled');
    for my $i (0 .. $#ids) {
        $r->hset("$ws:lr:$ids[$i]", %tpl, provisioningStatus => $st[$i]);
        $r->zadd("$ws:lines", 1700000000000 + $i, $ids[$i]);
    }
    ok(!$r->exists("$ws:live"), 'the old layout: no :live');

    my ($id, $b) = $l->created($w);
    is($b->{line}{provisioningStatus}, 'awaiting_payment',
       'its two live phone lines counted: an add-on');
    is_deeply(live_ids('org_before'), [sort @ids[0, 1], $id],
              ':live built: the live requests only');
    ok(!defined $r->zscore("$ws:lines", $ids[-1]),
       'the canceled one left :lines');
    is($r->zcard("$ws:lines"), 303, 'the failed ones stay in :lines');

    $b = $l->answer($l->list($w), 200, 'by-user');
    is_deeply([map { $_->{_id} } @{ $b->{lines} }], [@ids[0 .. 301], $id],
              'by-user: the same lines, in the same order');

    # built once: the next creation walks :live
    $l->answer($l->manage($w, $id, 'cancel'), 200, 'canceled');
    my $c = cost(sub {
        $l->answer($l->create($w, body()), 201, 'create again');
    });
    cmp_ok($c, '<', 100, "the next one walks :live, not the 300 failed"
                         . " lines ($c commands)");
};

# Nodes of two versions run side by side during a rollout, and a rollback
# runs the previous one again (docs/deploy.md): an nginx from before
# :live adds its creations to :lines alone. Once :live was built, a
# creation counted from it never saw them: a growth workspace with two
# live phone lines had a third included, and for ever.
subtest 'a creation an older nginx made after :live was built counts'
    => sub {
    my $w = $l->workspace('org_rollout');
    my $ws = 'lg:{ws:org_rollout}';
    my $p1 = $l->created($w);
    ok($r->exists("$ws:live"), ':live built by the first creation');

    # the older nginx's creation: its hash and :lines, as lr_create wrote
    # them before :live (its score the ms of its creation, later)
    my %tpl = $r->hgetall("$ws:lr:$p1");
    my $old = sprintf '%024x', 0x01d000;
    my $at = $r->zscore("$ws:lines", $p1) + 1000;
    $r->hset("$ws:lr:$old", %tpl, provisioningStatus => 'provisioning');
    $r->zadd("$ws:lines", $at, $old);

    my ($id, $b) = $l->created($w);
    is($b->{line}{provisioningStatus}, 'awaiting_payment',
       'two live phone lines, one of them the older nginx\'s: an add-on');
    is_deeply(live_ids('org_rollout'), [sort $p1, $old, $id],
              'and :live holds it now');

    # one more once :live counted it: the same (the index read since)
    $l->answer($l->manage($w, $id, 'cancel'), 200, 'canceled');
    $r->hset("$ws:lr:$old", provisioningStatus => 'failed');
    my $later = sprintf '%024x', 0x01d001;
    $r->hset("$ws:lr:$later", %tpl, provisioningStatus => 'active');
    $r->zadd("$ws:lines", $at + 1, $later);
    ($id, $b) = $l->created($w);
    is($b->{line}{provisioningStatus}, 'awaiting_payment',
       'a later one too: an add-on');
    is_deeply(live_ids('org_rollout'), [sort $p1, $later, $id],
              'the failed one left :live, the later one is in');
};

# :live was built only by a creation that counted (SPEC 2.2: a phone
# line of starter or growth, mini's email), so a workspace whose
# creations were add-ons of their channel (growth's emails) kept none:
# on a cluster each of its creations had lg_lr_here() walk every
# request of :lines, its failed ones too, before the gate, for ever.
subtest 'a creation that does not count builds :live too' => sub {
    my $tw = $l->workspace('org_tpl_addon');
    my $t = $l->created($tw);
    fail_line($t);
    my %tpl = $r->hgetall("lg:{ws:org_tpl_addon}:lr:$t");

    my %w = map { $_ => $l->workspace($_) } qw(org_addons org_addons0);
    $r->eval(<<'LUA', 1, 'lg:{ws:org_addons}', %tpl);
for i = 1, 2000 do
    local id = string.format('%024x', 0xadd000 + i)
    redis.call('HSET', KEYS[1] .. ':lr:' .. id, unpack(ARGV))
    redis.call('ZADD', KEYS[1] .. ':lines', 1700000000000 + i, id)
end
return 1
LUA
    ok(!$r->exists('lg:{ws:org_addons}:live'), 'no :live yet');

    my ($id) = $l->awaiting($w{org_addons});
    ok($r->exists('lg:{ws:org_addons}:live'),
       'an add-on creation built it');
    is_deeply(live_ids('org_addons'), [$id], 'with its request alone');
    $l->answer($l->manage($w{org_addons}, $id, 'cancel'), 200, 'canceled');
    $l->answer($l->manage($w{org_addons0}, scalar $l->awaiting(
        $w{org_addons0}), 'cancel'), 200, 'and one without failed lines');

    my %cost;
    for my $ws (sort keys %w) {
        $cost{$ws} = cost(sub {
            my ($i) = $l->awaiting($w{$ws});
            $l->answer($l->manage($w{$ws}, $i, 'cancel'), 200,
                       "$ws: canceled");
        });
    }
    note explain \%cost;
    cmp_ok($cost{org_addons}, '<=', $cost{org_addons0} + 2,
           'an add-on costs what it costs without 2,000 failed lines');
};

done_testing;
