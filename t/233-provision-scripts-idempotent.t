# pv_record and pv_release are sent again after a lost answer (durable
# writes, issue 13): each must be safe to run twice, or after a first run
# whose answer never came. Run here straight on Redis (EVAL of the
# scripts as the module embeds them), twice each.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;

my $s = LG::Stack->new(stub => 0)->start;
my $r = $s->redis;

# a script with its --#include lines pasted, as src/lua/embed.pl does
sub script {
    my ($name) = @_;
    my $slurp = sub {
        open my $fh, '<', $_[0] or die "$_[0]: $!";
        local $/;
        return <$fh>;
    };
    my $src = $slurp->("$LG::Stack::ROOT/src/lua/$name.lua");
    $src =~ s{^--#include ([a-z0-9_]+)[ \t]*$}{
        $slurp->("$LG::Stack::ROOT/src/lua/include/$1.lua")
    }gme;
    return $src;
}

my $RECORD = script('pv_record');
my $RELEASE = script('pv_release');
my $ISO = '2026-05-18T14:30:00.000Z';

sub record {
    my ($acct, $w, $sub) = @_;
    return [$r->eval($RECORD, 3, "lg:{acct:$acct}", 'lg:{fleet}:pv:inflight',
                     'lg:{fleet}:reconcile', $w, $sub, 1000, $acct,
                     'lg-confirm-x', "cus_$acct", $ISO)];
}

sub release {
    my ($acct, $w, $reason) = @_;
    return [$r->eval($RELEASE, 4, "lg:{acct:$acct}", 'lg:{fleet}:pv:inflight',
                     'lg:{fleet}:reconcile', 'lg:{fleet}:inventory', $w, 1000, 3, 10,
                     $reason // '', $acct, 'lg-confirm-x', "cus_$acct", $ISO)];
}

sub reserve {
    my ($acct, $w, $number) = @_;
    $r->hset("lg:{acct:$acct}", plan => 'inbound_only');
    $r->zadd("lg:{acct:$acct}:prov", 500, $w);
    $r->hset("lg:{acct:$acct}:resv:$w", phone_number => $number,
             createdAt => $ISO);
}

sub entries {
    my ($w) = @_;
    return grep { my %f = @{ $_->[1] }; $f{worker_id} eq $w }
           $r->xrange('lg:{fleet}:reconcile', '-', '+');
}

subtest 'record twice: one line, the second run says recorded' => sub {
    reserve('acct_r', 'worker_r1', '+15550001');
    is_deeply(record('acct_r', 'worker_r1', 'sub_1'), [1, '+15550001'],
              'recorded');
    is_deeply(record('acct_r', 'worker_r1', 'sub_1'), [1, '+15550001'],
              'run again: recorded, not "reservation missing"');
    is($r->hget('lg:{acct:acct_r}:line:worker_r1', 'subscription_id'),
       'sub_1', 'the line');
    is($r->zscore('lg:{acct:acct_r}:prov', 'worker_r1'), 1000,
       'the slot counts from the record');
    is(scalar entries('worker_r1'), 0, 'nothing queued');

    # a release sent after the record (a confirm ended meanwhile)
    release('acct_r', 'worker_r1', 'stripe_outcome_unknown');
    ok($r->exists('lg:{acct:acct_r}:line:worker_r1'), 'the line stays');
    is($r->zscore('lg:{acct:acct_r}:prov', 'worker_r1'), 1000,
       'and its slot');
    ok(!$r->sismember('lg:{fleet}:inventory', '+15550001'),
       'its number is not sold again');
};

subtest 'record that cannot write the line: queued once' => sub {
    reserve('acct_f', 'worker_f1', '+15550002');
    $r->set('lg:{acct:acct_f}:line:worker_f1', 'not a hash');
    is_deeply(record('acct_f', 'worker_f1', 'sub_2'), [0, 'record_failed'],
              'queued');
    is_deeply(record('acct_f', 'worker_f1', 'sub_2'), [0, 'record_failed'],
              'run again: the same');
    my @e = entries('worker_f1');
    is(scalar @e, 1, 'one lg:{fleet}:reconcile entry');
    my %f = @{ $e[0][1] };
    is($f{subscription_id}, 'sub_2', 'naming the subscription');
    is($f{phone_number}, '+15550002', 'and the number');
    ok($r->exists('lg:{acct:acct_f}:resv:worker_f1'),
       'the paid number stays reserved');
    is($r->zcard('lg:{acct:acct_f}:prov'), 1, 'the slot counts');
};

subtest 'record after an operator released it: queued once' => sub {
    is_deeply(record('acct_m', 'worker_m1', 'sub_3'),
              [0, 'reservation_missing'], 'queued');
    record('acct_m', 'worker_m1', 'sub_3');
    is(scalar entries('worker_m1'), 1, 'one entry');
};

subtest 'release twice: the number back once, queued once' => sub {
    reserve('acct_l', 'worker_l1', '+15550003');
    my $inv = $r->scard('lg:{fleet}:inventory');
    is(release('acct_l', 'worker_l1', 'stripe_outcome_unknown')->[0], 1,
       'released');
    is(release('acct_l', 'worker_l1', 'stripe_outcome_unknown')->[0], 0,
       'run again: nothing left to release');
    is($r->scard('lg:{fleet}:inventory'), $inv + 1, 'the number back, once');
    is($r->zcard('lg:{acct:acct_l}:prov'), 0, 'the slot freed');
    is(scalar entries('worker_l1'), 1, 'one lg:{fleet}:reconcile entry');
};

done_testing();
