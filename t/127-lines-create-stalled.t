# A Lines API paid add-on stalled between lr_create's reply and its first
# Stripe call for longer than linegate_reconcile_lost_after, while a
# reconciliation run takes its journal member "<W> <id>" for a dead
# worker's: the run finds no invoice at Stripe and releases the
# reservation (lr_release). The creation used to go on all the same:
# draft, item, finalize; an invoice Stripe paid at finalization (an
# amount due of 0: the customer's credit balance) then found its store
# refused (the request gone) and could be neither voided nor deleted: an
# orphan for a human (invoice_paid), a charge with no line. The creation
# now makes, fills or finalizes no invoice once its reservation is that
# old (create_late): no Stripe call, the reservation released, 503
# STORE_UNAVAILABLE with Retry-After (docs/lines-api.md). A retry with
# the same Idempotency-Key is a new creation.
#
# The stall: Redis holds lr_create (CLIENT PAUSE WRITE) until the worker
# that sent it is stopped (SIGSTOP); then lr_create runs, its answer
# waits in the socket; the other worker serves a reconciliation run past
# lost_after; the stopped worker goes on (SIGCONT). The command timeout
# is longer than the stall, so that the worker reads the answer first.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Mojo::UserAgent;
use LG::Stack;
use LG::Test qw(:DEFAULT eventually scored_before);
use LG::Lines qw(body);
use LG::ClockShift qw(shift_clock);

# A keepalive tick longer than the stall: a PING the worker wrote behind
# its held write, before the SIGSTOP, is answered only after it, and a
# worker woken by SIGCONT (epoll_wait's EINTR) runs its expired timers
# before it reads: the harness's 1 s tick dropped the connection as
# "keepalive PING unanswered" (t/127 once), the request failing for that
# rather than for its age.
my $s = LG::Stack->new(WORKERS => 2, REDIS_COMMAND_TIMEOUT => '5s',
                       REDIS_KEEPALIVE => '10s',
                       HTTP_EXTRA => 'linegate_reconcile_delay 0; '
                           . 'linegate_reconcile_lost_after 1s;')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $EMAIL = body(channelType => 'email', email => 'st@example.com');

# an add-on of 0: Stripe pays its invoice at finalization
my $price = $s->stub(POST => '/_stub/prices',
                     {id => 'price_email_addon', unit_amount => 0});
ok($price->res->is_success, 'a free add-on') or diag $price->res->body;

# a reconciliation run on a connection of its own: the stack's keeps one
# alive, maybe to the worker stopped
sub run_fresh {
    my $ua = Mojo::UserAgent->new(request_timeout => 10);
    return $ua->post($s->url('/_linegate/reconciliation/run')
                     => {Authorization => 'Bearer ' . $s->operator_token});
}

# the journal's member of workspace $w not among @$old (a creation's
# "<W> <id>"), once older than lost_after (1 s) by its score, nginx's
# clock when lr_create was sent, which a run's sweep compares: a run then
# meets it
sub journal_lost {
    my ($w, $old) = @_;
    my %old = map { $_ => 1 } @$old;
    return scored_before($r, 'lg:{fleet}:lr:inflight',
                         sub { index($_[0], "$w->{id} ") == 0
                               && !$old{$_[0]} }, 1000, 10);
}

subtest 'stalled past lost_after before its invoice: no Stripe call, 503'
=> sub {
    # a cluster writes the owner index (and the journal's member) in a
    # step of its own, answered before lr_create is sent: a worker stopped
    # there has no reservation yet, and the run's release marks the id
    # (lr_create then makes nothing). The next subtest covers a cluster.
    plan skip_all => 'one Redis: the index is sent with lr_create'
        if $s->topology eq 'cluster';
    my $w = $l->workspace('org_stall');
    # its two included lines (growth): the add-on is the third
    $l->answer($l->create($w, body()), 201, "included $_") for 1 .. 2;
    my @before = $l->invoices($w->{customer});

    # Staged on what Redis shows, not on time: paused until the worker's
    # lr_create is held (a pause of 1.5 s could end first under load),
    # unpaused once the worker is stopped; the run once the reservation
    # is older than lost_after (a sleep to 2.8 s after the pause assumed
    # lr_create ran by then)
    my ($worker, $run, $aged, $list) = (undef, undef, undef, '');
    my @journal = $r->zrange('lg:{fleet}:lr:inflight', 0, -1);
    my %old = map { $_ => 1 } @journal;
    $r->client('PAUSE', 10_000, 'WRITE');
    my ($tx) = $l->during([$w, POST => '/api/line-requests', $EMAIL,
                           'Idempotency-Key' => 'stall-1'], sub {
        # lr_create sent, held by Redis behind the index, then run (its
        # journal member written; its answer waits in the socket)
        return 0 unless $worker = $s->stop_held_worker(
            sub { grep { index($_, "$w->{id} ") == 0 && !$old{$_} }
                  $r->zrange('lg:{fleet}:lr:inflight', 0, -1) },
            10_000, \$list);
        # the reservation older than lost_after
        $aged = journal_lost($w, \@journal);
        $run = run_fresh() if $aged;
        kill 'CONT', $worker;
        return 1;
    }, 15);
    kill 'CONT', $worker if $worker;
    $r->client('UNPAUSE');

    ok($worker, 'the worker was stopped with lr_create in flight')
        or diag $list;
    ok($aged, 'lr_create ran, past lost_after in the journal');
    is($run && $run->res->code, 200, 'the run answered (the other worker)')
        or diag $run && $run->res->body;
    my @mine = grep { ($_->{workspace} // '') eq $w->{id} }
               @{ ($run ? $run->res->json // {} : {})->{entries} // [] };
    is(scalar @mine, 1, 'the run settled the reservation as worker_lost')
        or diag explain $run && $run->res->json;
    is($mine[0]{outcome}, 'no_invoice', 'no invoice at Stripe: released');
    ok($tx, 'answered');
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'the late creation: 503');
    ok($tx->res->headers->header('Retry-After'), 'with Retry-After');
    my @after = $l->invoices($w->{customer});
    is(scalar @after, scalar @before, 'no invoice made at Stripe')
        or diag explain [map { [$_->{id}, $_->{status}] } @after];
    my $id = $mine[0]{line_request_id} // '';
    is_deeply($l->lr($w, $id), {}, 'no request left');
    ok(!defined $l->pending($w), 'the workspace not blocked');
    is_deeply([$r->keys("lg:{ws:$w->{id}}:idem:*")], [],
              'the Idempotency-Key free');
    ok(eventually(sub { !grep { index($_, "$w->{id} ") == 0 }
                        $r->zrange('lg:{fleet}:lr:inflight', 0, -1) }, 5),
       'nothing in the journal');
    my @left = grep { ($_->{workspace} // '') eq $w->{id} }
               map { +{ @{ $_->[1] } } }
               $r->xrange('lg:{fleet}:reconcile', '-', '+');
    is_deeply(\@left, [], 'nothing left for a human');
    my $late = 'outlived linegate_reconcile_lost_after before its invoice'
               . ' was made';
    like($s->error_log, qr/line request "\Q$id\E" \Q$late\E/, 'logged');

    # the retry with the same key: a creation of its own, billed (paid at
    # finalization: provisioning), and replayed after that
    my $again = $l->create($w, $EMAIL, 'Idempotency-Key' => 'stall-1');
    my $b = $l->answer($again, 201, 'the retry is created');
    isnt($b->{line}{_id}, $id, 'a new request');
    is($b->{line}{paymentStatus}, 'paid', 'paid at finalization');
    is(scalar $l->invoices($w->{customer}), @before + 1, 'one invoice');
    my $replay = $l->create($w, $EMAIL, 'Idempotency-Key' => 'stall-1');
    is($replay->res->body, $again->res->body, 'then replayed');
};

# The draft's call held by Stripe (its work done after the wait) past
# lost_after while a run finds no invoice and releases the reservation:
# the creation, answered its draft, fills and finalizes nothing (the
# draft deleted), 503. Before, it finalized the draft (paid) and met the
# same refused store.
subtest 'its draft answered past lost_after: not finalized, deleted, 503'
=> sub {
    my $w = $l->workspace('org_slow');
    $l->answer($l->create($w, body()), 201, "included $_") for 1 .. 2;
    my $items = () = $l->stripe_log(qr{^/v1/invoiceitems});
    my $finals = () = $l->stripe_log(qr{/finalize$});
    my @journal = $r->zrange('lg:{fleet}:lr:inflight', 0, -1);
    $l->fault(path_prefix => '/v1/invoices', latency_ms => 2500);
    my $run;
    my ($tx) = $l->during([$w, POST => '/api/line-requests', $EMAIL,
                           'Idempotency-Key' => 'slow-1'], sub {
        return 0 unless $s->stub_held(qr{^/v1/invoices$});
        # the reservation older than lost_after (a sleep to 1.5 s after
        # the request assumed lr_create ran within 0.5 s)
        $run = $s->op(POST => '/reconciliation/run')
            if journal_lost($w, \@journal);
        return 1;
    }, 15);
    $l->clear_faults;

    my @mine = grep { ($_->{workspace} // '') eq $w->{id} }
               @{ ($run ? $run->res->json // {} : {})->{entries} // [] };
    is(scalar @mine, 1, 'the run met it with its draft still held')
        or diag explain $run && $run->res->json;
    is($mine[0]{outcome}, 'no_invoice', 'no invoice yet: released');
    ok($tx, 'answered');
    $l->error_is($tx, 503, 'STORE_UNAVAILABLE', 'the late creation: 503');
    is(scalar $l->stripe_log(qr{^/v1/invoiceitems}), $items,
       'no item added');
    is(scalar $l->stripe_log(qr{/finalize$}), $finals, 'nothing finalized');
    is_deeply([grep { ($_->{status} // '') ne 'draft' }
               $l->invoices($w->{customer})], [],
              'no invoice open or paid (the draft deleted)');
    my $id = $mine[0]{line_request_id} // '';
    my @left = grep { ($_->{workspace} // '') eq $w->{id} }
               map { +{ @{ $_->[1] } } }
               $r->xrange('lg:{fleet}:reconcile', '-', '+');
    is_deeply(\@left, [], 'nothing left for a human');
    my $late = 'outlived linegate_reconcile_lost_after before its invoice'
               . ' was filled';
    like($s->error_log, qr/line request "\Q$id\E" \Q$late\E/, 'logged');
    $l->answer($l->create($w, $EMAIL, 'Idempotency-Key' => 'slow-1'), 201,
               'the retry is created');
};

# Its finalize sent before lost_after and answered after lr_create's 10
# minutes (LG::ClockShift moves nginx's clock while Stripe holds the
# answer, the invoice paid at finalization already), while the next
# creation of the workspace comes: lr_create took the reservation, still
# without an invoice, for abandoned and dropped it, and the store of the
# paid invoice was refused: a charge with no line, queued for a human.
# A reservation is abandoned only once the last finalize it may have sent
# has had its linegate_stripe_timeout and the repairs' 8 s: the next
# creation waits (409), the paid invoice is stored and the line made.
subtest 'a finalize answered past 10 minutes: stored, not orphaned' => sub {
    my $w = $l->workspace('org_final');
    $l->answer($l->create($w, body()), 201, "included $_") for 1 .. 2;
    $l->fault(path_prefix => '/v1/invoices/', latency_ms => 2500,
              after_commit => \1);
    my ($next, $shifted);
    my ($tx) = $l->during([$w, POST => '/api/line-requests', $EMAIL], sub {
        return 0 unless $s->stub_held(qr{/finalize$});
        shift_clock(601_000);
        $shifted = 1;
        $next = $l->create($w, body(channelType => 'email',
                                    email => 'next@example.com'));
        return 1;
    }, 15);
    $l->clear_faults;
    shift_clock(0);

    ok($shifted, 'the finalize was held with nginx past 10 minutes');
    isnt($next && $next->res->code, 201,
         'the next creation did not take the reservation')
        or diag $next && $next->res->body;
    ok($tx, 'answered');
    my $b = $l->answer($tx, 201, 'the creation is stored');
    is($b->{line}{paymentStatus}, 'paid', 'paid at finalization');
    my @left = grep { ($_->{workspace} // '') eq $w->{id} }
               map { +{ @{ $_->[1] } } }
               $r->xrange('lg:{fleet}:reconcile', '-', '+');
    is_deeply(\@left, [], 'nothing left for a human')
        or diag explain \@left;
};

done_testing;
