# lr_create run straight on Redis (EVAL of the script as the module embeds
# it, its keys and arguments as ngx_http_linegate_create_script() passes
# them: on one Redis, and in its cluster mode on a cluster). The two
# checks of a creation's id, the release mark lg:{ws:W}:lrvoid:<id> and
# the id's hash, share one EXISTS and each still answers at its place; an
# included line's 201 is nginx's (ARGV[24]), kept byte for byte under an
# idempotency key, and not sent back without one.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test qw(lua_script);

my $s = LG::Stack->new(stub => 0)->start;
my $r = $s->redis;

my $CREATE = lua_script('lr_create');

# src/ngx_http_linegate_lines.h
my ($LR_OK, $LR_READ_ONLY, $LR_COLLISION) = (1, 6, 14);

my $n = 0;

sub workspace {
    my (%f) = @_;
    my $ws = 'org_script' . ++$n;
    $r->hset("lg:{ws:$ws}", plan => 'growth',
             subscriptionStatus => 'active',
             stripeCustomerId => "cus_$ws", %f);
    return $ws;
}

# a 201 body as nginx renders it, with escapes to keep byte for byte
sub body_of {
    return qq({"success":true,"line":{"_id":"$_[0]","n":"a \\"q\\" \\u00e9"}});
}

# on a cluster the script runs in 'c' mode without the set-up stream and
# the journal (other slots: nginx writes them in steps of their own)
my $CLUSTER = $s->topology eq 'cluster';

# lr_create for an included phone line: its 11 keys (9 on a cluster),
# then its 24 arguments (lr_create.lua's header)
sub create {
    my ($ws, $id, %o) = @_;
    my $t = "lg:{ws:$ws}";
    my $idem = $o{idem} // '';
    my @keys = ($t, "$t:keys", "$t:gcra", "$t:lrvoid:$id", "$t:lr:$id",
                "$t:lines", "$t:live", "$t:pending", "$t:idem:$idem");
    push @keys, 'lg:provisioning', 'lg:{fleet}:lr:inflight' unless $CLUSTER;
    my @args = ($CLUSTER ? 'c' : 'w', $ws, 1, 59999999, '', '', $id,
                1795644705904,
                '2026-11-25T22:11:45.904Z', 'phone', 'purchased', 'Ann',
                'Lee', '', '', '', '', '94105', 'CA', $idem,
                length $idem ? "fp-$id" : '', 86400, 600000,
                length $idem ? body_of($id) : '');
    return [$r->eval($CREATE, scalar @keys, @keys, @args)];
}

# the set-up stream's entries of a line request (one Redis: lr_create
# appends them; on a cluster nginx does, after the script)
sub setup_entries {
    my ($id) = @_;
    return 0 if $CLUSTER || !$r->exists('lg:provisioning');
    return scalar grep { {@{$_->[1]}}->{id} eq $id }
        $r->xrange('lg:provisioning', '-', '+');
}

sub made_nothing {
    my ($ws, $id, $name) = @_;
    my $t = "lg:{ws:$ws}";
    subtest $name => sub {
        is($r->exists("$t:lr:$id") ? $r->hget("$t:lr:$id", 'firstName')
                                   : undef,
           undef, 'no line request of the new id');
        is($r->zscore("$t:lines", $id), undef, 'not in the index');
        is(setup_entries($id), 0, 'no set-up entry');
    };
}

subtest 'a new id: made, the 201 is nginx\'s' => sub {
    my $ws = workspace();
    my $got = create($ws, 'id-new');
    is($got->[0], $LR_OK, 'LR_OK');
    is($got->[1], $ws, 'the workspace');
    is(scalar @$got, 3, 'no body sent back without an idempotency key');
    is($r->hget("lg:{ws:$ws}:lr:id-new", 'provisioningStatus'),
       'provisioning', 'the line request, provisioning');
    is($r->zscore("lg:{ws:$ws}:lines", 'id-new'), 1795644705904,
       'in the index, scored by ARGV[8] as sent');
    is(setup_entries('id-new'), $CLUSTER ? 0 : 1,
       'its set-up entry (one Redis)');
};

subtest 'with an idempotency key: the 201 kept byte for byte' => sub {
    my $ws = workspace();
    my $got = create($ws, 'id-idem', idem => 'k1');
    is($got->[0], $LR_OK, 'LR_OK');
    my %rec = $r->hgetall("lg:{ws:$ws}:idem:k1");
    is($rec{state}, 'done', 'the key is done');
    is($rec{status}, 201, '201 kept');
    is($rec{body}, body_of('id-idem'), 'the body as nginx sent it');
};

subtest 'the release mark: a collision, nothing written' => sub {
    my $ws = workspace();
    $r->set("lg:{ws:$ws}:lrvoid:id-void", 1);
    my $got = create($ws, 'id-void');
    is($got->[0], $LR_COLLISION, 'LR_COLLISION');
    made_nothing($ws, 'id-void', 'nothing made');
};

subtest 'the id taken: a collision, the hash left as it was' => sub {
    my $ws = workspace();
    $r->hset("lg:{ws:$ws}:lr:id-taken", firstName => 'Old',
             provisioningStatus => 'canceled');
    my $got = create($ws, 'id-taken');
    is($got->[0], $LR_COLLISION, 'LR_COLLISION');
    is($r->hget("lg:{ws:$ws}:lr:id-taken", 'firstName'), 'Old',
       'the hash unchanged');
    is($r->zscore("lg:{ws:$ws}:lines", 'id-taken'), undef,
       'not indexed');
};

subtest 'the id taken, the workspace read-only: read-only first' => sub {
    # the id's check keeps its place after the workspace's: one EXISTS
    # for both marks must not answer a collision before a read-only
    my $ws = workspace(subscriptionStatus => 'past_due');
    $r->hset("lg:{ws:$ws}:lr:id-ro", firstName => 'Old');
    my $got = create($ws, 'id-ro');
    is($got->[0], $LR_READ_ONLY, 'LR_READ_ONLY');
    is($got->[3], 'past_due', 'with the subscription status');
};

subtest 'both absent after a collision elsewhere: made' => sub {
    my $ws = workspace();
    $r->set("lg:{ws:$ws}:lrvoid:id-other", 1);
    my $got = create($ws, 'id-fresh');
    is($got->[0], $LR_OK, 'another id\'s mark does not matter');
};

done_testing;
