# by-user reads lg:{ws:W}:lines a page at a time (SPEC 2.8;
# docs/data-model.md, "by-user's read of :lines"). The index keeps every
# failed line for ever (by-user lists them), and both of by-user's ways
# read it whole in one ZRANGE: one command of Redis as long as the
# workspace's history of failures, every other client waiting. The work
# is measured as counts, not time: each index read by-user sent (from
# MONITOR) is run again on a copy of the index as it was, and how many
# members it answers is what that command touched. Then the answer with
# failed, live, active and canceled lines mixed, ties of one ms across a
# page's end (more of one ms than a page holds, too), canceled and gone
# entries an old index still holds (each leaves it between two pages),
# on both ways, against the index's own order.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;
use LG::Lines;

# NGX_HTTP_LINEGATE_LIST_PAGE, what one read of the index asks for
my $PAGE = 256;

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

# a failed line's hash, as the operator API leaves it: the template of
# the seeded ones
sub failed_line {
    my ($w) = @_;
    my $id = $l->created($w);
    answer_is($s->op(POST => "/lines/$id/failed", {reason => 'no number'}),
              200, "$w->{id}: a failed line");
    return ($id, $r->hgetall("lg:{ws:$w->{id}}:lr:$id"));
}

# $n more as the API leaves them (a hash each, in :lines); score($i)
# their ms; dead($i): 'canceled' (its hash so, still in the index, as an
# index written before canceled ones left it), 'gone' (no hash) or ''
sub seed {
    my ($w, $n, $score, $dead, %tpl) = @_;
    my @args;
    for my $i (1 .. $n) {
        my $id = sprintf '%024x', 0xfc0000 + $i;
        push @args, $id, $score->($i), $dead->($i);
    }
    $r->eval(<<'LUA', 1, "lg:{ws:$w->{id}}", scalar(@args), @args, %tpl);
local n = tonumber(ARGV[1])
local tpl = {unpack(ARGV, n + 2)}
for i = 2, n + 1, 3 do
    local id, score, dead = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if dead ~= 'gone' then
        redis.call('HSET', KEYS[1] .. ':lr:' .. id, unpack(tpl))
        if dead == 'canceled' then
            redis.call('HSET', KEYS[1] .. ':lr:' .. id,
                       'provisioningStatus', 'canceled',
                       'paymentStatus', 'failed')
        end
    end
    redis.call('ZADD', KEYS[1] .. ':lines', score, id)
end
return 1
LUA
}

# what by-user must list: the index's ids in its order, but those
# canceled or gone
sub expected {
    my ($w) = @_;
    my $ws = $w->{id};
    return [grep {
        my $st = $r->hget("lg:{ws:$ws}:lr:$_", 'provisioningStatus');
        defined $st && $st ne 'canceled';
    } $r->zrange("lg:{ws:$ws}:lines", 0, -1)];
}

sub scripts_flushed {
    qx{redis-cli -p $_ SCRIPT FLUSH}
        for $s->topology eq 'cluster' ? $s->cluster_live_ports
                                      : ($s->redis_port);
}

# by-user measured: its answer, and for each command that read the
# index, how many members that command answered (run again on a copy of
# the index taken before: the index only loses members meanwhile, so a
# copy answers as many as the command did, or more)
sub measured {
    my ($w, $h) = @_;
    my $idx = "lg:{ws:$w->{id}}:lines";
    my $copy = "$idx:s47-copy";
    $r->del($copy);
    $r->zunionstore($copy, 1, $idx);
    my $tx;
    my ($cmds) = $s->redis_traffic(sub { $tx = $l->list($h) });
    my @reads;
    for (@$cmds) {
        my @a = /"((?:[^"\\]|\\.)*)"/g;
        next unless @a > 1 && $a[1] eq $idx && $a[0] =~ /^z\w*range/i;
        my $cmd = lc shift @a;
        shift @a;
        my @got = $r->$cmd($copy, @a);
        push @reads, scalar(@got) / ((grep { /^withscores$/i } @a) ? 2 : 1);
    }
    $r->del($copy);
    return ($tx, \@reads, $cmds);
}

sub ids { [map { $_->{_id} } @{ $_[0]{lines} }] }

subtest '2,000 failed lines: each read of the index a page, not all'
    => sub {
    my $w = $l->workspace('org_pages');
    my $live = $l->created($w);
    my ($failed, %tpl) = failed_line($w);
    my $N = 2000;
    # three lines a ms (ties at the pages' ends)
    seed($w, $N, sub { 1900000000000 + int($_[0] / 3) }, sub { '' }, %tpl);
    my $all = $N + 2;
    my $want = expected($w);
    is(scalar @$want, $all, "$all lines to list");

    for my $way (['Clerk, the pipeline', $w->{clerk}],
                 ['after SCRIPT FLUSH, lr_list.lua', $w->{clerk}, 1]) {
        my ($what, $h, $flush) = @$way;
        scripts_flushed() if $flush;
        my ($tx, $reads, $cmds) = measured($w, $h);
        my $ans = $l->answer($tx, 200, "$what: by-user");
        is_deeply(ids($ans), $want, "$what: every line, oldest first");
        ok(scalar @$reads, "$what: the index read")
            or diag "@$cmds[0 .. 5]";
        note "$what: members answered per read: @$reads";
        my ($max) = sort { $b <=> $a } @$reads;   # (sort's $a and $b)
        cmp_ok($max // 0, '<=', $PAGE + 3,
               "$what: no read of the index answers more than a page "
               . 'and the ids of one ms already listed')
            or diag "members answered per read: @$reads";
        my $sum = 0;
        $sum += $_ for @$reads;
        # (the pipeline that failed on NOSCRIPT read its first page too;
        # a full first page, read by ids alone, is read again by score)
        cmp_ok($sum, '<=', $all + 2 * @$reads + $PAGE * ($flush ? 2 : 1),
               "$what: the reads together answer each member once "
               . '(and the ties of a page\'s end again)')
            or diag "@$reads";
        is(scalar(grep { /"HGETALL" "lg:\{ws:org_pages\}:lr:/i } @$cmds),
           $all, "$what: a hash read a line");
    }
};

subtest 'failed, live, active, canceled and gone mixed, ties across pages'
    => sub {
    my $w = $l->workspace('org_mixed');
    my $idx = "lg:{ws:org_mixed}:lines";
    my $first = $l->created($w);
    my ($failed, %tpl) = failed_line($w);
    my $active = $l->created($w);
    answer_is($s->op(POST => "/lines/$active/active",
                      {phone => "+15551230000"}), 200, 'active');
    my $canceled = $l->awaiting($w);
    $l->answer($l->manage($w, $canceled, 'cancel'), 200, 'one canceled');
    ok(!defined $r->zscore($idx, $canceled), 'it left the index');

    # 900: 600 three a ms, then 300 in one ms (more than a page), one
    # in 7 canceled and one in 11 gone, still in the index
    my $score = sub {
        $_[0] <= 600 ? 1900000000000 + int($_[0] / 3) : 1900000001000
    };
    my $dead = sub {
        $_[0] % 7 == 0 ? 'canceled' : $_[0] % 11 == 0 ? 'gone' : ''
    };
    my $n = 900;
    my $reseed = sub { seed($w, $n, $score, $dead, %tpl) };
    $reseed->();
    # awaiting payment (scored now: before the seeded ones, whose ms
    # are to come)
    my $pending = $l->awaiting($w);
    my $want = expected($w);
    my $dropped = grep { $dead->($_) } 1 .. $n;
    is(scalar @$want, $n - $dropped + 4,
       'the seeded alive ones, the live, the active, the failed and the '
       . 'pending');

    for my $way (['Clerk, the pipeline', $w->{clerk}],
                 ['an API key', $w->{auth}],
                 ['after SCRIPT FLUSH, lr_list.lua', $w->{clerk}, 1]) {
        my ($what, $h, $flush) = @$way;
        $reseed->();
        is($r->zcard($idx), $n + 4, "$what: the dead back in the index");
        scripts_flushed() if $flush;
        my ($tx, $reads) = measured($w, $h);
        my $b = $l->answer($tx, 200, "$what: by-user");
        is_deeply(ids($b), $want,
                  "$what: the index's order, none canceled or gone, "
                  . 'none twice') or diag explain [scalar @{ ids($b) }];
        my %st;
        $st{$_->{provisioningStatus}}++ for @{ $b->{lines} };
        ok($st{failed} && $st{provisioning} && $st{active}
           && $st{awaiting_payment} && !$st{canceled},
           "$what: failed, live and active listed, no canceled")
            or diag explain \%st;
        cmp_ok(scalar @$reads, '>=', 3, "$what: the index read in pages")
            or diag "@$reads";
        my $again = $l->list($w->{clerk});
        is($again->res->body, $tx->res->body, "$what: again, the same");
        # lr_unlist takes at most 30 a command: a few more calls
        $l->list($w->{clerk}) for 1 .. 6;
        is($r->zcard($idx), scalar @$want + 0,
           "$what: the dead left the index") or diag $r->zcard($idx);
    }
};

done_testing;
