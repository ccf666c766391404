# by-user's other way (SPEC 2.8): where GET by id takes lr_get.lua (its
# pipeline failed before its timeout, here the NOSCRIPT of its rl_gcra
# after a SCRIPT FLUSH; an API key looked up a second time), by-user took
# lr_list.lua, which read every line of the workspace in one script, the
# failed ones too (they stay in lg:{ws:W}:lines for ever): one command of
# Redis as long as the workspace's history of failed lines, every other
# client of that Redis (or cluster master) waiting meanwhile (~1.8 us a
# line, docs/performance.md). The script is now the gate alone; the index
# and the hashes are plain commands, as on the pipeline's way, and the
# answer is the same bytes. What ran inside scripts is counted from
# MONITOR (its "[0 lua]" lines): no timing.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(sha256_hex);
use LG::Stack;
use LG::Test;
use LG::Lines;

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $N = 2000;
my $WS = 'org_fallback';

my $w = $l->workspace($WS);
my $failed = $l->created($w);
answer_is($s->op(POST => "/lines/$failed/failed", {reason => 'no number'}),
          200, 'a failed line');
my %tpl = $r->hgetall("lg:{ws:$WS}:lr:$failed");
is($tpl{provisioningStatus}, 'failed', 'its hash says so');

# $N more, as the API leaves them: a hash each, in :lines
$r->eval(<<'LUA', 1, "lg:{ws:$WS}", $N, %tpl);
for i = 1, tonumber(ARGV[1]) do
    local id = string.format('%024x', 0xfb1000 + i)
    redis.call('HSET', KEYS[1] .. ':lr:' .. id, unpack(ARGV, 2))
    redis.call('ZADD', KEYS[1] .. ':lines', 1900000000000 + i, id)
end
return 1
LUA
my $live = $l->created($w);
my $all = $N + 2;

# what the pipeline's way answers (a Clerk token: the workspace known)
my $plain = $l->list($w->{clerk});
my $b = $l->answer($plain, 200, 'by-user, the pipeline\'s way');
is(scalar @{ $b->{lines} }, $all, "its $all lines, the failed ones too");

my $ws = qr/lg:\{ws:\Q$WS\E\}/;

# by-user after a SCRIPT FLUSH, the other way: its commands, and what
# the scripts among them ran inside Redis
sub fallback {
    my ($what, $h) = @_;
    qx{redis-cli -p $_ SCRIPT FLUSH}
        for $s->topology eq 'cluster' ? $s->cluster_live_ports
                                      : ($s->redis_port);
    my $tx;
    my ($cmds, undef, undef, $lua) =
        $s->redis_traffic(sub { $tx = $l->list($h) });
    my $b = $l->answer($tx, 200, "$what: by-user");
    is(scalar @{ $b->{lines} }, $all, "$what: its $all lines");
    is($tx->res->body, $plain->res->body,
       "$what: the same bytes as the pipeline's way");

    # the gate's keys, first: lr_list.lua (EVALSHA, then its EVAL)
    ok(scalar(grep { /"$ws" "$ws:keys" "$ws:gcra"/ } @$cmds),
       "$what: lr_list.lua ran") or diag "@$cmds[0 .. 5]";

    my @walked = grep { /"HGETALL"|"HMGET"|"EXISTS"/i } @$lua;
    is(scalar @walked, 0, "$what: no line read inside a script")
        or diag scalar(@walked) . " such commands, first: $walked[0]";
    cmp_ok(scalar @$lua, '<', 50,
           "$what: the scripts ran a handful of commands, not one a line")
        or diag scalar(@$lua) . " commands in scripts";
    is(scalar(grep { /"HGETALL" "$ws:lr:/i } @$cmds), $all,
       "$what: each hash read by a command of its own");
    return $b;
}

subtest 'a pipeline that failed (NOSCRIPT): the gate, then plain reads'
    => sub {
    fallback('Clerk', $w->{clerk});
};

subtest 'an API key no worker knows, its check failed: the same' => sub {
    my $tx = $s->op(POST => "/workspaces/$WS/keys");
    fallback('a new API key',
             {Authorization => 'Bearer ' . $tx->res->json->{key}});
};

# the consistency the script's way is for: a key revoked halfway (the
# workspace's entry gone, its lookup not yet) is refused by the
# pipeline's check, looked up again and refused by lr_list.lua's gate,
# which still decides before anything is read
subtest 'a key revoked halfway: 401 from the gate, no line read' => sub {
    my $k = $s->op(POST => "/workspaces/$WS/keys")->res->json;
    my $d = sha256_hex($k->{key});
    my %keys = $r->hgetall("lg:{ws:$WS}:keys");
    my @f = grep { $keys{$_} eq $d } keys %keys;
    is(scalar @f, 1, 'the key\'s entry');
    $r->hdel("lg:{ws:$WS}:keys", @f);
    my $tx;
    my ($cmds, undef, undef, $lua) = $s->redis_traffic(sub {
        $tx = $l->list({Authorization => "Bearer $k->{key}"});
    });
    json_error_is($tx, 401, undef, 'revoked halfway');
    ok(scalar(grep { /"$ws" "$ws:keys" "$ws:gcra"/ } @$cmds),
       'lr_list.lua refused it') or diag "@$cmds";
    # (the pipeline read the index with the key's check: ZRANGE, once)
    is(scalar(grep { /"HGETALL"/i } @$cmds, @$lua), 0, 'no line read')
        or diag "@$cmds";
    cmp_ok(scalar(grep { /"ZRANGE"/i } @$cmds), '<=', 1,
           'the index not read after the gate') or diag "@$cmds";
};

done_testing;
