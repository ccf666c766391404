# The reads of the Lines API: GET /api/line-requests/:id (SPEC 2.5) with
# reconciliation on read, GET /api/lines/by-user (2.8) and
# GET /api/lines/check-availability (2.9).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use Time::Local qw(timegm);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

# (linegate_reconcile_delay 0: a run takes an entry queued just now)
my $s = LG::Stack->new(RECONCILE_INTERVAL => '2s',
                       HTTP_EXTRA => 'linegate_reconcile_delay 0;')->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_r' . ++$n, @_) }

# The commands Redis received from clients while $code ran (commands
# run inside scripts left out) and the round trips the request waited
# for: Redis's reads, less the fire-and-forget PEXPIRE that a request
# opening a rate window writes after its answer.
sub traffic {
    my ($cmds, $reads) = $s->redis_traffic(@_);
    my $after = grep { /"pexpire"/i } @$cmds;
    return ($cmds, $reads - $after);
}

# The traffic of a call once its worker holds the API key: warmed up
# (4 calls), then measured; measured again (at most 5 times) when the
# entry had expired meanwhile (linegate_api_key_cache, 500 ms: a loaded
# machine can take longer between the warm-up and the call), which the
# pipeline's GET of the key shows.
sub hot_traffic {
    my ($call) = @_;
    my ($cmds, $trips);
    for (1 .. 5) {
        $call->() for 1 .. 4;
        ($cmds, $trips) = traffic($call, again => 1);
        last unless grep { /"GET" "lg:apikey:/i } @$cmds;
    }
    return ($cmds, $trips);
}

sub invoice_gets {
    my ($inv) = @_;
    my @g = grep { $_->{method} eq 'GET' }
            $l->stripe_log(qr{^/v1/invoices/\Q$inv\E$});
    return scalar @g;
}

sub op_ok {
    my ($method, $path, $body) = @_;
    my $tx = $s->op($method => $path, $body);
    ok($tx->res->is_success, "operator $path") or diag $tx->res->body;
}

my @d = gmtime;
my $TODAY = sprintf '%04d-%02d-%02d', $d[5] + 1900, $d[4] + 1, $d[3];

subtest 'GET: an included request, in one Redis round trip' => sub {
    my $w = ws();
    my ($id, $created) = $l->created($w);

    my $tx;
    my ($cmds, $trips) = traffic(sub { $tx = $l->get($w, $id) },
                              again => 1);
    my $b = $l->answer($tx, 200, 'GET');
    is($trips, 1, 'one round trip') or diag "@$cmds";

    # the key now cached by every worker: a pipeline, the workspace's
    # rate (rl_gcra, linegate_limit's script) and the hash
    ($cmds, $trips) = hot_traffic(sub { $tx = $l->get($w, $id) });
    is_deeply($l->answer($tx, 200, 'hot GET'), $b, 'the same answer');
    is($trips, 1, 'hot GET: one round trip') or diag "@$cmds";
    is_deeply([map { /"(\w+)"/ ? uc $1 : '?' } @$cmds],
              [qw(EVALSHA HGETALL)],
              'hot GET: the rate (GCRA) and the hash') or diag "@$cmds";
    like($cmds->[0] // '', qr/"lg:\{ws:\Q$w->{id}\E\}:gcra"/,
         'hot GET: the workspace\'s GCRA key') or diag "@$cmds";

    ($cmds, $trips) = hot_traffic(sub { $tx = $l->get($w->{clerk}, $id) });
    is_deeply($l->answer($tx, 200, 'Clerk GET'), $b, 'Clerk: same answer');
    is($trips, 1, 'Clerk GET: one round trip') or diag "@$cmds";
    is_deeply([map { /"(\w+)"/ ? uc $1 : '?' } @$cmds],
              [qw(EVALSHA HGETALL)], 'Clerk GET: the same two commands')
        or diag "@$cmds";

    is_deeply([sort keys %$b],
              [qw(line paymentRequired paymentStatus status success)],
              'fields, no paymentUrl');
    is($b->{status}, 'provisioning', 'status');
    is_deeply($b->{line}, $created->{line}, 'the line, as created');
    like($tx->res->headers->header('RateLimit-Policy'),
         qr/^"workspace";q=\d+;w=60$/, 'RateLimit-Policy');

    op_ok(POST => "/lines/$id/active", {phone => '+14155550142'});
    $b = $l->answer($l->get($w, $id), 200, 'after set-up');
    is($b->{status}, 'active', 'active');
    is($b->{line}{isActive}, Mojo::JSON->true, 'isActive');
    is($b->{line}{phone}, '+14155550142', 'its number');

    op_ok(POST => "/lines/$id/health", {status => 'unhealthy'});
    op_ok(POST => "/lines/$id/usage",
          {newConversations => 3, totalMessages => 7});
    $b = $l->answer($l->get($w, $id), 200, 'with health and usage');
    is($b->{line}{healthCheck}{status}, 'unhealthy', 'healthCheck.status');
    like($b->{line}{healthCheck}{lastCheckedAt},
         qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'lastCheckedAt');
    is_deeply($b->{line}{usage}, {date => $TODAY, newConversationsCount => 3,
                                  totalMessagesCount => 7}, 'usage today');
    my $lr = "lg:{ws:$w->{id}}:lr:$id";
    is_deeply({map { $_ => $r->hget($lr, $_) } qw(_ud _nc _tm)},
              {_ud => $TODAY, _nc => 3, _tm => 7},
              'the latest day\'s counters kept in the line\'s hash');

    # counters of another day are not today's
    $r->hset($lr, _ud => '2000-01-01');
    for my $who ($w, $w->{clerk}) {
        my $u = $l->answer($l->get($who, $id), 200, 'usage of another day');
        is_deeply($u->{line}{usage}, {date => $TODAY,
                  newConversationsCount => 0, totalMessagesCount => 0},
                  'another day: 0 today');
    }
    $r->hset($lr, _ud => $TODAY);

    my $f = $l->created($w);
    op_ok(POST => "/lines/$f/failed", {reason => 'no numbers'});
    $b = $l->answer($l->get($w, $f), 200, 'a failed line');
    is($b->{status}, 'failed', 'failed');
};

subtest 'GET: awaiting payment, reconciled with Stripe' => sub {
    my $w = ws();
    my ($id, $created) = $l->awaiting($w);
    my $inv = $created->{invoiceId};

    my $b = $l->answer($l->get($w, $id), 200, 'right after creation');
    is($b->{status}, 'awaiting_payment', 'awaiting_payment');
    is($b->{paymentUrl}, $created->{paymentUrl}, 'paymentUrl');
    is($b->{invoiceId}, $inv, 'invoiceId');
    is($b->{paymentRequired}, Mojo::JSON->true, 'paymentRequired');
    is(invoice_gets($inv), 0, 'just checked at creation: Stripe not asked');

    $l->invoice_do($inv, 'pay');      # no webhook: only a poll can tell
    $b = $l->answer($l->get($w, $id), 200, 'paid, within the interval');
    is($b->{status}, 'awaiting_payment', 'still the stored state');

    sleep 2.1;
    $b = $l->answer($l->get($w, $id), 200, 'after the interval');
    is(invoice_gets($inv), 1, 'Stripe asked once');
    is($b->{status}, 'provisioning', 'promoted to provisioning');
    is($b->{paymentStatus}, 'paid', 'paid');
    is($b->{paymentRequired}, Mojo::JSON->false, 'no payment required');
    ok(!exists $b->{paymentUrl}, 'no paymentUrl any more');
    is($b->{line}{provisioningStatus}, 'provisioning', 'line too');
    ok(!defined $l->pending($w), 'the workspace is free');
    # relayed after the answer on a cluster
    ok(eventually(sub { grep { $_->{id} eq $id } $l->stream }, 5),
       'in the provisioning stream');

    sleep 2.1;
    $l->answer($l->get($w, $id), 200, 'later');
    is(invoice_gets($inv), 1, 'a settled request is not checked again');
};

subtest 'GET with a cached key, due for a check: counted once' => sub {
    my $w = ws();
    my ($id, $created) = $l->awaiting($w);
    my $inv = $created->{invoiceId};
    # the workspace's GCRA state: its theoretical arrival time (us), one
    # emission interval T (60 s / 100000, the stack's rate) further per
    # request admitted; set 10 s ahead (many requests made), so that
    # nothing refills while this runs
    my $gcra = "lg:{ws:$w->{id}}:gcra";
    my $T = 60_000_000 / 100_000;

    my $tx;
    $tx = $l->get($w, $id) for 1 .. 4;  # every worker knows the key
    my ($sec, $usec) = $r->time;
    my $before = $sec * 1_000_000 + $usec + 10_000_000;
    $r->set($gcra, $before, 'PX', 70_000);
    is(invoice_gets($inv), 0, 'within the interval: Stripe not asked');

    $r->hset("lg:{ws:$w->{id}}:lr:$id", reconciledAt => 0);
    my ($cmds) = traffic(sub { $tx = $l->get($w, $id) });
    my $b = $l->answer($tx, 200, 'due for a check');
    is($b->{status}, 'awaiting_payment', 'still awaiting payment');
    is(invoice_gets($inv), 1, 'Stripe asked once');
    like($cmds->[0] // '', qr/"EVALSHA".*:gcra"/i, 'the pipeline first')
        or diag "@$cmds";
    is(scalar(grep /"EVALSHA"/i, @$cmds), 2, 'then the claim, a script')
        or diag "@$cmds";
    is($r->get($gcra) - $before, $T, 'the request counted once');
    ok($r->hget("lg:{ws:$w->{id}}:lr:$id", 'reconciledAt') > 0,
       'the check is claimed');
};

subtest 'GET: void and uncollectible cancel the request' => sub {
    for my $op (qw(void mark_uncollectible)) {
        my $w = ws();
        my ($id, $c) = $l->awaiting($w);
        $l->invoice_do($c->{invoiceId}, $op);
        sleep 2.1;
        my $b = $l->answer($l->get($w, $id), 200, "invoice $op");
        is($b->{status}, 'canceled', "$op: canceled");
        is($b->{paymentStatus}, 'failed', "$op: failed");
        ok(!defined $l->pending($w), "$op: the workspace is free");
        $l->answer($l->create($w, body(channelType => 'email',
                                       email => 'z@example.com')),
                   201, "$op: a new request may be made");
    }
};

subtest 'GET: Stripe failing answers the stored state' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    $l->invoice_do($c->{invoiceId}, 'pay');
    sleep 2.1;

    for my $f ([status => 500], [status => 429], [drop => 1]) {
        $l->fault(method => 'GET', path_prefix => '/v1/invoices/', @$f);
        my $b = $l->answer($l->get($w, $id), 200, "Stripe fault @$f");
        is($b->{status}, 'awaiting_payment', "@$f: the stored state");
        sleep 2.1;
    }

    my $b = $l->answer($l->get($w, $id), 200, 'Stripe back');
    is($b->{status}, 'provisioning', 'now promoted');
};

# Stripe's answer about another invoice, or another object (a credit
# note is void too), says nothing of this request's invoice: the stored
# state is answered. The status of whatever was answered used to be
# taken: the request promoted on another invoice's payment, or canceled.
subtest 'GET: an answer about something else answers the stored state'
    => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $inv = $c->{invoiceId};

    for my $f (['another invoice, paid',
                {id => 'in_another', object => 'invoice', status => 'paid'}],
               ['another invoice, void',
                {id => 'in_another', object => 'invoice', status => 'void'}],
               ['a credit note, void',
                {id => $inv, object => 'credit_note', status => 'void'}]) {
        my ($what, $shape) = @$f;
        sleep 2.1;
        $l->fault(method => 'GET', path_prefix => "/v1/invoices/$inv",
                  status => 200, body => $shape);
        my $b = $l->answer($l->get($w, $id), 200, $what);
        is($b->{status}, 'awaiting_payment', "$what: the stored state");
        is($l->lr($w, $id)->{provisioningStatus}, 'awaiting_payment',
           "$what: unchanged");
        is($l->pending($w), $id, "$what: still the pending request");
        $l->clear_faults;
    }

    $l->invoice_do($inv, 'pay');
    sleep 2.1;
    my $b = $l->answer($l->get($w, $id), 200, 'its own invoice paid');
    is($b->{status}, 'provisioning', 'then promoted');
};

# What Stripe answers is replayed to clients (paymentUrl) and decides the
# request (status): an invoice whose link is no bounded https URL free of
# quotes and control characters, or whose status is none of Stripe's, is
# an answer not understood: the stored state is answered, nothing kept.
# A paid invoice with such a link used to promote the request and keep
# the link.
subtest 'GET: an invoice with an odd link or status answers the stored '
    . 'state' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    my $inv = $c->{invoiceId};
    like($c->{paymentUrl}, qr{^https://}, 'the stub links over https');

    for my $f (['a javascript: link', 'paid', 'javascript:alert(1)'],
               ['an http link', 'paid', 'http://invoice.example/i/1'],
               ['a link with a quote', 'paid',
                'https://invoice.example/i/"><script>'],
               ['a link with a newline', 'paid',
                "https://invoice.example/i/1\nX-A: b"],
               ['a link too long', 'paid',
                'https://invoice.example/' . ('a' x 2030)],
               ['a link not a string', 'paid', {href => 'https://x'}],
               ['an unknown status', 'paid_and_more',
                'https://invoice.example/i/1'],
               ['a status too long', 'p' x 5000,
                'https://invoice.example/i/1']) {
        my ($what, $status, $url) = @$f;
        sleep 2.1;
        $l->fault(method => 'GET', path_prefix => "/v1/invoices/$inv",
                  status => 200,
                  body => {id => $inv, object => 'invoice',
                           status => $status, hosted_invoice_url => $url});
        my $b = $l->answer($l->get($w, $id), 200, $what);
        is($b->{status}, 'awaiting_payment', "$what: the stored state");
        is($b->{paymentUrl}, $c->{paymentUrl}, "$what: the stored link");
        my $h = $l->lr($w, $id);
        is($h->{provisioningStatus}, 'awaiting_payment', "$what: unchanged");
        is($h->{paymentUrl}, $c->{paymentUrl}, "$what: link unchanged");
        $l->clear_faults;
    }

    my $ok = 'https://invoice.example/' . ('a' x (2048 - 24));
    is(length $ok, 2048, 'a link of 2048 characters');
    sleep 2.1;
    $l->fault(method => 'GET', path_prefix => "/v1/invoices/$inv",
              status => 200, body => {id => $inv, object => 'invoice',
                                      status => 'open',
                                      hosted_invoice_url => $ok});
    my $b = $l->answer($l->get($w, $id), 200, 'a long https link');
    is($b->{status}, 'awaiting_payment', 'still open');
    $l->clear_faults;

    $l->invoice_do($inv, 'pay');
    sleep 2.1;
    $b = $l->answer($l->get($w, $id), 200, 'its own invoice paid');
    is($b->{status}, 'provisioning', 'then promoted');
};

subtest 'GET: parallel polls make one Stripe call per interval' => sub {
    my $w = ws();
    my ($id, $c) = $l->awaiting($w);
    sleep 2.1;
    my @txs = $l->parallel(map { [$w, GET => "/api/line-requests/$id"] }
                           1 .. 10);
    is(scalar(grep { $_->res->code == 200 } @txs), 10, '10 answers');
    is(invoice_gets($c->{invoiceId}), 1, 'one Stripe call');
    ok($l->lr($w, $id)->{reconciledAt} > 0, 'reconciledAt recorded');
};

subtest 'the claim holds only on the request as nginx read it' => sub {
    # lr_claim.lua has no rule of its own (nginx decides a check is due):
    # it writes reconciledAt only when every field the decision read is
    # unchanged ('' for absent)
    open my $fh, '<', "$LG::Stack::ROOT/src/lua/lr_claim.lua" or die $!;
    my $claim = do { local $/; <$fh> };
    my $k = 'lg:{ws:org_claim}:lr:0123456789abcdef01234567';
    $r->hset($k, provisioningStatus => 'awaiting_payment',
             invoiceId => 'in_1', reconciledAt => 5);
    my @read = (provisioningStatus => 'awaiting_payment',
                invoiceId => 'in_1', reconciledAt => 5, reissueAt => '');

    is($r->eval($claim, 1, $k, 10, @read[0 .. 3], reconciledAt => 4,
                reissueAt => ''), 0, 'another poll claimed it: refused');
    is($r->hget($k, 'reconciledAt'), 5, 'nothing written');
    is($r->eval($claim, 1, $k, 10, @read[0 .. 5], reissueAt => 1), 0,
       'a reissue began: refused');
    is($r->eval($claim, 1, $k, 10, @read), 1, 'unchanged: claimed');
    is($r->hget($k, 'reconciledAt'), 10, 'reconciledAt = now');
    is($r->eval($claim, 1, $k, 11, @read), 0, 'the same read again: refused');
};

subtest 'by-user: every line but canceled ones, oldest first' => sub {
    my $w = ws();
    my $b = $l->answer($l->list($w), 200, 'no lines yet');
    is_deeply($b, {lines => []}, 'an empty list');

    my $a1 = $l->created($w, firstName => 'One');
    my $a2 = $l->created($w, firstName => 'Two');
    my ($c3) = $l->awaiting($w, firstName => 'Three');
    $l->answer($l->manage($w, $c3, 'cancel'), 200, 'cancel Three');
    my ($a4) = $l->awaiting($w, firstName => 'Four');
    op_ok(POST => "/lines/$a1/active", {phone => '+14155550111'});
    op_ok(POST => "/lines/$a2/failed", {reason => 'x'});
    op_ok(POST => "/lines/$a1/usage", {totalMessages => 2});
    op_ok(POST => "/lines/$a1/health", {status => 'healthy'});

    my $other = ws();
    $l->created($other);

    $b = $l->answer($l->list($w), 200, 'list');
    my @lines = @{ $b->{lines} };
    is_deeply([map { $_->{firstName} } @lines], [qw(One Two Four)],
              'oldest first, canceled left out');
    is_deeply([map { $_->{provisioningStatus} } @lines],
              [qw(active failed awaiting_payment)], 'their statuses');
    is($lines[0]{usage}{totalMessagesCount}, 2, 'usage');
    is($lines[0]{healthCheck}{status}, 'healthy', 'health');
    is($lines[1]{healthCheck}, undef, 'no health reported: null');
    is_deeply([map { $_->{workspaceId} } @lines], [($w->{id}) x 3],
              'only this workspace\'s');

    my $tok = $s->clerk_token(o => {id => $w->{id}});
    my $c = $l->answer($l->req({Authorization => "Bearer $tok"},
                               GET => '/api/lines/by-user'), 200, 'Clerk');
    is_deeply($c, $b, 'the same with a Clerk token');
};

# JSON is UTF-8 (RFC 8259 8.1): a line's field that another writer put
# into Redis as bytes that are not UTF-8 is answered as U+FFFD, one per
# byte, and the answer stays readable; UTF-8 (2 and 4 bytes) is kept
subtest 'bytes in Redis that are not UTF-8: U+FFFD, valid JSON' => sub {
    my $w = ws();
    my $id = $l->created($w, firstName => 'Ada');
    my $k = "lg:{ws:$w->{id}}:lr:$id";

    # stray byte, overlong '/', lone surrogate, cut short, past U+10FFFF
    $r->hset($k, firstName => "A\xffd\xc0\xafa\xed\xa0\x80!\xe2\x82",
                 lastName => "\xc5\x81ukasz \xf0\x9f\x98\x80 \xf4\x90\x80\x80");
    my $want_first = "A\x{fffd}d\x{fffd}\x{fffd}a"
                   . "\x{fffd}\x{fffd}\x{fffd}!\x{fffd}\x{fffd}";
    my $want_last = "\x{141}ukasz \x{1f600} " . ("\x{fffd}" x 4);

    for my $case (['GET', sub { $l->get($w, $id) },
                   sub { $_[0]{line} }],
                  ['by-user', sub { $l->list($w) },
                   sub { $_[0]{lines}[0] }]) {
        my ($name, $call, $line_of) = @$case;
        my $line;
        eventually(sub {
            my $raw = $call->()->res->body;
            return unless utf8::decode(my $copy = $raw);
            my $b = eval { Mojo::JSON::decode_json($raw) } or return;
            $line = $line_of->($b);
            return $line && $line->{firstName} ne 'Ada';
        }, 5);
        ok($line && $line->{firstName} ne 'Ada',
           "$name: an answer of valid UTF-8 JSON") or next;
        is($line->{firstName}, $want_first, "$name: firstName, U+FFFD");
        is($line->{lastName}, $want_last, "$name: lastName, UTF-8 kept");
    }
};

# the reconcile stream's entries of a request
sub queued_for {
    my ($id) = @_;
    return grep { ($_->{line_request_id} // '') eq $id }
           map { +{ @{ $_->[1] } } }
           $r->xrange('lg:{fleet}:reconcile', '-', '+');
}

# A request canceled for its uncollectible invoice and paid later stays
# canceled (SPEC 2.3: no way out of canceled), out of by-user, and the
# payment is queued for a human (paid_after_cancel). It used to be
# reopened by the webhook (lr_settle), back in the listing.
subtest 'by-user: a request canceled, then paid, stays out' => sub {
    my $w = ws();
    my $hook = $s->url('/webhooks/stripe');
    my $p1 = $l->created($w, firstName => 'P1');
    my ($e1, $c) = $l->awaiting($w, firstName => 'E1');
    is($l->invoice_do($c->{invoiceId}, 'mark_uncollectible', $hook)
       ->{status}, 200, 'E1 marked uncollectible (webhook)');
    is($l->lr($w, $e1)->{provisioningStatus}, 'canceled', 'E1 canceled');
    my $p2 = $l->created($w, firstName => 'P2');
    my $ev = $l->invoice_do($c->{invoiceId}, 'pay', $hook);
    is($ev->{status}, 200, 'E1 paid after all (webhook)');
    my $lr = $l->lr($w, $e1);
    is("$lr->{provisioningStatus}/$lr->{paymentStatus}", 'canceled/failed',
       'E1 still canceled');
    ok(!defined $r->zscore("lg:{ws:$w->{id}}:lines", $e1),
       'not back in the index');
    my @q = queued_for($e1);
    is(scalar @q, 1, 'its payment queued for a human') or diag explain \@q;
    is($q[0]{reason}, 'paid_after_cancel', 'as paid_after_cancel');
    is($q[0]{invoice_id}, $c->{invoiceId}, 'naming its invoice');

    for my $who (['API key', $w], ['Clerk', $w->{clerk}]) {
        my $b = $l->answer($l->list($who->[1]), 200, "list ($who->[0])");
        is_deeply([map { $_->{firstName} } @{ $b->{lines} }], [qw(P1 P2)],
                  "$who->[0]: E1 not listed");
    }
    my $b = $l->answer($l->get($w, $e1), 200, 'GET E1');
    is($b->{status}, 'canceled', 'answered canceled, as the webhook left it');

    # a run finds the invoice paid, named by a canceled request: left
    # for a human, as the run leaves any such payment (operator.md)
    my $from = length $s->error_log;
    my $tx = $s->op(POST => '/reconciliation/run');
    is($tx->res->code, 200, 'a reconciliation run') or diag $tx->res->body;
    my ($e) = grep { ($_->{line_request_id} // '') eq $e1 }
              @{ ($tx->res->json // {})->{entries} // [] };
    is(join('/', map { $_ // '-' } @{ $e // {} }{qw(outcome detail)}),
       'deferred/invoice_paid', 'deferred: invoice_paid')
        or diag $tx->res->body;
    is(scalar(@q = queued_for($e1)), 1, 'the entry stays for a human');
    is($l->lr($w, $e1)->{provisioningStatus}, 'canceled', 'not reopened');
    like(substr($s->error_log, $from),
         qr/\Q$c->{invoiceId}\E" is paid, but the request was canceled: left/,
         'logged for a human');
};

# A GET's check reads the request awaiting payment; before Stripe
# answers, its invoice is marked uncollectible (the request canceled as
# its webhook does) and paid (no webhook yet): lr_resolve 'paid' finds it
# canceled. It used to reopen it; now it stays canceled and the payment
# is queued for a human, as the webhook does (one marker: once).
subtest 'GET: a payment read after its request was canceled: a human\'s'
    => sub {
    my $w = ws();
    my $hook = $s->url('/webhooks/stripe');
    my ($id, $c) = $l->awaiting($w);
    my $inv = $c->{invoiceId};
    sleep 2.1;
    my $gets = invoice_gets($inv);
    # (below linegate_stripe_timeout, 3 s here)
    $l->fault(method => 'GET', path_prefix => "/v1/invoices/$inv",
              latency_ms => 2500);
    my $from = length $s->error_log;
    my $lkey = "lg:{ws:$w->{id}}:lr:$id";
    my ($tx, $done) = $l->during([$w, GET => "/api/line-requests/$id"],
        sub {
            return 0 unless invoice_gets($inv) > $gets;
            $l->invoice_do($inv, 'mark_uncollectible');
            # what its event does (lr_settle 'void'), without the
            # webhook's round trips: the window is the stub's latency
            $r->hset($lkey, provisioningStatus => 'canceled',
                     paymentStatus => 'failed');
            $r->zrem("lg:{ws:$w->{id}}:lines", $id);
            $r->zrem("lg:{ws:$w->{id}}:live", $id);
            $r->del("lg:{ws:$w->{id}}:pending");
            $l->invoice_do($inv, 'pay');
            return 1;
        }, 10);
    ok($done, 'canceled and paid while the check waited for Stripe');
    my $b = $l->answer($tx, 200, 'the GET');
    is($b->{status}, 'canceled', 'answered canceled');
    my $lr = $l->lr($w, $id);
    is("$lr->{provisioningStatus}/$lr->{paymentStatus}", 'canceled/failed',
       'not reopened');
    ok(!defined $r->zscore("lg:{ws:$w->{id}}:lines", $id),
       'not back in the index');
    ok(eventually(sub { queued_for($id) == 1 }, 5),
       'its payment queued for a human (a durable write)');
    my ($q) = queued_for($id);
    is($q->{reason}, 'paid_after_cancel', 'as paid_after_cancel');
    is($q->{invoice_id}, $inv, 'naming its invoice');
    my $said = qq{invoice "$inv" of line request "$id" of workspace }
        . qq{"$w->{id}" is paid, but the request was canceled: not reopened};
    like(substr($s->error_log, $from), qr/\[warn\].*\Q$said\E/,
         'logged at warn');

    # its invoice.paid, delivered late: the same entry, not a second one
    my $ev = $s->stub(POST => '/_stub/webhook', {
        url => $hook, type => 'invoice.paid',
        object => {id => $inv, object => 'invoice', status => 'paid'}});
    is(($ev->res->json // {})->{status}, 200, 'invoice.paid answered 200')
        or diag $ev->res->body;
    is(scalar(my @q = queued_for($id)), 1, 'still one entry');
    is($l->lr($w, $id)->{provisioningStatus}, 'canceled', 'still canceled');
};

# The same race, the webhooks first: the invoice marked uncollectible
# (its webhook cancels the request) and paid (its webhook queues the
# payment, logged at warn) while the GET's check waits for Stripe; the
# check then finds the request canceled on the paid invoice and queues
# it too, which its marker answers 0: said at notice, as the webhook's
# redelivery says it. It used to log the same warn again at every
# finder. The marker of the payment never expires: queued once for as
# long as the request exists (it lasted 7 days, and a finder after that
# queued it again).
subtest 'GET: a payment the webhook queued first: one warn' => sub {
    my $w = ws();
    my $hook = $s->url('/webhooks/stripe');
    my ($id, $c) = $l->awaiting($w);
    my $inv = $c->{invoiceId};
    sleep 2.1;
    my $gets = invoice_gets($inv);
    $l->fault(method => 'GET', path_prefix => "/v1/invoices/$inv",
              latency_ms => 2500);
    my $from = length $s->error_log;
    my ($tx, $done) = $l->during([$w, GET => "/api/line-requests/$id"],
        sub {
            return 0 unless invoice_gets($inv) > $gets;
            $l->invoice_do($inv, 'mark_uncollectible', $hook);
            $l->invoice_do($inv, 'pay', $hook);
            return 1;
        }, 10);
    ok($done, 'canceled and paid (webhooks) while the check waited');
    my $b = $l->answer($tx, 200, 'the GET');
    is($b->{status}, 'canceled', 'answered canceled');
    my $said = qr/invoice "\Q$inv\E" of line request "\Q$id\E" of /
               . qr/workspace "\Q$w->{id}\E" is paid, but the request /
               . qr/was canceled: not reopened, /;
    ok(eventually(sub { substr($s->error_log, $from)
                        =~ /\[notice\].*${said}queued before for/ }, 5),
       'the check found it queued before: notice');
    my @warn = grep { /\[warn\]/ && /$said/ }
               split /\n/, substr($s->error_log, $from);
    is(scalar @warn, 1, 'one warn, when queued') or diag join "\n", @warn;
    is(scalar(my @q = queued_for($id)), 1, 'one entry');
    my $marker = "lg:{fleet}:q:$w->{id}:paid_$inv";
    is($r->get($marker), 1, 'its marker');
    is($r->ttl($marker), -1, 'its marker never expires');
};

# by-user of a workspace the worker knows (a Clerk token, a cached API
# key) reads the index and then the hashes with plain commands (two
# round trips); where GET by id would take lr_get.lua, by-user takes
# lr_list.lua's gate, then the same plain reads (t/192). Both must
# answer the same bytes, and both take out of the index the requests it
# still holds that are canceled or gone.
subtest 'by-user: the plain path answers what lr_list.lua answers' => sub {
    my $w = ws();
    my $idx = "lg:{ws:$w->{id}}:lines";
    my $a1 = $l->created($w, firstName => "Esc\"aped\\ \x{e9}t\x{e9}");
    my $a2 = $l->created($w, firstName => 'Two');
    my ($c3) = $l->awaiting($w, firstName => 'Three');
    $l->answer($l->manage($w, $c3, 'cancel'), 200, 'cancel Three');
    my ($a4) = $l->awaiting($w, firstName => 'Four');
    op_ok(POST => "/lines/$a1/active", {phone => '+14155550121'});
    op_ok(POST => "/lines/$a1/usage",
          {newConversations => 3, totalMessages => 7});
    op_ok(POST => "/lines/$a1/health", {status => 'unhealthy'});

    # 7 more written as the API writes them (a plan holds 2 included
    # lines, one awaits payment at a time), one of them gone below
    my %tpl = $r->hgetall("lg:{ws:$w->{id}}:lr:$a2");
    my @more;
    for my $i (1 .. 7) {
        my $id = sprintf '%024x', 0xbe000 + $i;
        my $ms = 1_800_000_000_000 + $i;
        $r->hset("lg:{ws:$w->{id}}:lr:$id", %tpl, firstName => "More$i",
                 provisioningStatus => $i % 2 ? 'active' : 'failed',
                 $i == 3 ? (_ud => '2001-01-01', _nc => 9, _tm => 9) : ());
        $r->set("lg:line:$id", $w->{id});
        $r->zadd($idx, $ms, $id);
        push @more, $id;
    }
    my $gone = $more[4];
    $r->del("lg:{ws:$w->{id}}:lr:$gone");
    my $c3_score = 1_700_000_000_000;

    # the index as an older version left it: the canceled one and the
    # gone one still in it
    my $stale = sub {
        $r->zadd($idx, $c3_score, $c3);
        $r->zadd($idx, 1_800_000_000_005, $gone);
        is($r->zcard($idx), 11, 'the index holds 11, 2 of them dead');
    };
    my $dropped = sub {
        my ($what) = @_;
        my $n;
        for (1 .. 20) {
            $n = $r->zcard($idx);
            last if $n == 9;
            sleep 0.1;
        }
        is($n, 9, "$what: the canceled and the gone request left the index");
        ok(!defined $r->zscore($idx, $c3) && !defined $r->zscore($idx, $gone),
           "$what: those two");
    };

    # the script: what a pipeline that failed before its timeout falls
    # back to, here its rl_gcra's NOSCRIPT after a SCRIPT FLUSH (a key no
    # worker has seen takes the plain path too, t/190)
    $stale->();
    qx{redis-cli -p $_ SCRIPT FLUSH}
        for $s->topology eq 'cluster' ? $s->cluster_live_ports
                                      : ($s->redis_port);
    my $tx;
    my ($lua) = $s->redis_traffic(sub { $tx = $l->list($w->{clerk}) });
    my $ws = qr/lg:\{ws:\Q$w->{id}\E\}/;
    ok(scalar(grep { /"3" "$ws" "$ws:keys" "$ws:gcra"/ } @$lua),
       'by lr_list.lua (its gate)')
        or diag "@$lua";
    my $script = $tx->res->body;
    my $b = $l->answer($tx, 200, 'lr_list.lua');
    is(scalar @{ $b->{lines} }, 9, '9 lines listed');
    is_deeply([map { $_->{firstName} } @{ $b->{lines} }[1 .. 8]],
              ['Two', 'Four', map { "More$_" } 1, 2, 3, 4, 6, 7],
              'oldest first, the canceled and the gone one left out');
    is($b->{lines}[0]{firstName}, "Esc\"aped\\ \x{e9}t\x{e9}",
       'escapes and UTF-8');
    $dropped->('lr_list.lua');

    # the plain path, with the workspace known: the same bytes
    $stale->();
    $tx = $l->list($w->{clerk});
    $l->answer($tx, 200, 'Clerk: plain commands');
    is($tx->res->body, $script, 'Clerk: the same bytes as lr_list.lua');
    $dropped->('Clerk');

    $l->list($w) for 1 .. 4;
    $stale->();
    $tx = $l->list($w);
    $l->answer($tx, 200, 'API key, cached: plain commands');
    is($tx->res->body, $script, 'cached API key: the same bytes');
    $dropped->('cached API key');

    # the drop, after the answer: lr_unlist.lua, which takes a request
    # out only if it is still canceled or gone when it runs (by-user's
    # reads and its drop are not one atomic step: a ZREM of what was
    # read would drop a request paid and reopened meanwhile for good)
    $stale->();
    my ($cmds, $trips) = traffic(sub { $tx = $l->list($w->{clerk}) });
    is($tx->res->body, $script, 'Clerk again: the same bytes');
    $dropped->('Clerk again');
    is(scalar(grep { /"ZREM"/i } @$cmds), 0, 'no ZREM of what was read')
        or diag "@$cmds";
    my @z = grep { /"EVALSHA" "\w+" "3" "\Q$idx\E"/i } @$cmds;
    is(scalar @z, 1, 'one conditional drop (lr_unlist), not waited for')
        or diag "@$cmds";
    like($z[0] // '', qr/"(?:\Q$c3\E" "\Q$gone\E|\Q$gone\E" "\Q$c3\E)"/,
         'of the two');

    # the step itself: a request reopened since it was read stays
    my $unlist = do {
        local $/;
        open my $fh, '<', "$LG::Stack::ROOT/src/lua/lr_unlist.lua" or die $!;
        <$fh>;
    };
    $stale->();
    $r->hset("lg:{ws:$w->{id}}:lr:$c3", provisioningStatus => 'provisioning');
    is($r->eval($unlist, 3, $idx, "lg:{ws:$w->{id}}:lr:$c3",
                "lg:{ws:$w->{id}}:lr:$gone", $c3, $gone), 1,
       'lr_unlist: one left the index');
    ok(defined $r->zscore($idx, $c3), 'the reopened one stays');
    ok(!defined $r->zscore($idx, $gone), 'the gone one left');
    $r->hset("lg:{ws:$w->{id}}:lr:$c3", provisioningStatus => 'canceled');
    $r->zrem($idx, $c3);

    # round trips: the rate and the index, then the hashes
    ($cmds, $trips) = hot_traffic(sub { $tx = $l->list($w) });
    is($tx->res->body, $script, 'again: the same bytes');
    is($trips, 2, 'by-user, cached API key: two round trips')
        or diag "@$cmds";
    is_deeply([map { /"(\w+)"/ ? uc $1 : '?' } @$cmds],
              [qw(EVALSHA ZRANGE), ('HGETALL') x 9],
              'the rate (GCRA), the index, a hash per line')
        or diag "@$cmds";
    ($cmds, $trips) = traffic(sub { $tx = $l->list($w->{clerk}) },
                              again => 1);
    is($trips, 2, 'by-user, Clerk: two round trips') or diag "@$cmds";

    # an empty workspace: one round trip
    my $e = ws();
    ($cmds, $trips) = traffic(sub { $tx = $l->list($e->{clerk}) },
                              again => 1);
    is($tx->res->body, '{"lines":[]}', 'no lines: an empty list');
    is($trips, 1, 'no lines: one round trip') or diag "@$cmds";

    # more lines than one pipeline reads (64): the rest in another
    my $big = ws();
    my $bidx = "lg:{ws:$big->{id}}:lines";
    for my $i (1 .. 70) {
        my $id = sprintf '%024x', 0xb16000 + $i;
        $r->hset("lg:{ws:$big->{id}}:lr:$id", %tpl, firstName => "Big$i");
        $r->set("lg:line:$id", $big->{id});
        $r->zadd($bidx, 1_800_000_000_000 + $i, $id);
    }
    $tx = $s->op(POST => "/workspaces/$big->{id}/keys");
    $tx = $l->list({Authorization => 'Bearer ' . $tx->res->json->{key}});
    $script = $tx->res->body;
    ($cmds, $trips) = traffic(sub { $tx = $l->list($big->{clerk}) },
                              again => 1);
    $b = $l->answer($tx, 200, '70 lines');
    is_deeply([map { $_->{firstName} } @{ $b->{lines} }],
              [map { "Big$_" } 1 .. 70], 'all 70, oldest first');
    is($tx->res->body, $script, '70 lines: the same bytes as lr_list.lua');
    is($trips, 3, '70 lines: three round trips (64 hashes, then 6)')
        or diag "@$cmds";
};

subtest 'check-availability (SPEC 2.9)' => sub {
    my $w = ws();
    my $id = $l->created($w);

    my $b = $l->answer($l->check($w, $id), 200, 'provisioning');
    is_deeply([sort keys %$b], [sort qw(success lineId available reason
              provisioningStatus healthCheck usage remaining)], 'fields');
    is($b->{lineId}, $id, 'lineId');
    is($b->{available}, Mojo::JSON->false, 'not available');
    is($b->{reason}, 'not_active', 'not_active');
    is($b->{provisioningStatus}, 'provisioning', 'provisioningStatus');
    is_deeply($b->{remaining}, {newConversations => 20, totalMessages => 50},
              'remaining: the daily limits');

    op_ok(POST => "/lines/$id/active", {phone => '+14155550177'});
    $b = $l->answer($l->check($w, $id), 200, 'active, no report');
    is($b->{available}, Mojo::JSON->true, 'available');
    is($b->{reason}, undef, 'reason null');
    is($b->{healthCheck}, undef, 'healthCheck null');

    op_ok(POST => "/lines/$id/usage",
          {newConversations => 5, totalMessages => 10});
    $b = $l->answer($l->check($w, $id), 200, 'some usage');
    is_deeply($b->{remaining}, {newConversations => 15, totalMessages => 40},
              'remaining');
    is_deeply($b->{usage}, {date => $TODAY, newConversationsCount => 5,
                            totalMessagesCount => 10}, 'usage');

    op_ok(POST => "/lines/$id/health", {status => 'unhealthy'});
    $b = $l->answer($l->check($w, $id), 200, 'unhealthy');
    is($b->{available}, Mojo::JSON->false, 'not available');
    is($b->{reason}, 'unhealthy', 'unhealthy');
    is($b->{healthCheck}{status}, 'unhealthy', 'healthCheck');

    op_ok(POST => "/lines/$id/health", {status => 'healthy'});
    $b = $l->answer($l->check($w, $id), 200, 'healthy again');
    is($b->{available}, Mojo::JSON->true, 'available');

    op_ok(POST => "/lines/$id/usage", {newConversations => 15});
    $b = $l->answer($l->check($w, $id), 200, '20 new conversations');
    is($b->{reason}, 'daily_limit_reached', 'daily_limit_reached');
    is($b->{remaining}{newConversations}, 0, 'none left');

    my $m = $l->created($w);
    op_ok(POST => "/lines/$m/active", {phone => '+14155550178'});
    op_ok(POST => "/lines/$m/usage", {totalMessages => 60});
    $b = $l->answer($l->check($w, $m), 200, '60 messages');
    is($b->{reason}, 'daily_limit_reached', 'daily_limit_reached');
    is($b->{remaining}{totalMessages}, 0, 'never negative');
};

subtest 'check-availability: 400 and 404' => sub {
    my $w = ws();
    my $b = $l->answer($l->check($w, undef), 400, 'no id');
    like($b->{error}, qr/id/, 'says the id is missing');
    ok(!exists $b->{code}, 'a plain error');
    $l->answer($l->check($w, ''), 400, 'an empty id');
    $b = $l->answer($l->check($w, 'xyz'), 400, 'a malformed id');
    like($b->{error}, qr/24/, 'says what an id looks like');
    $l->answer($l->check($w, 'A' x 24), 400, 'upper case hex');
    $b = $l->answer($l->check($w, 'a' x 24), 404, 'unknown');
    is_deeply($b, {error => 'Line request not found'}, '404 body');

    # the query's id as a URL carries it: %-escapes are the characters
    # they encode (RFC 3986 2.1; nginx decodes the path's id too)
    my $id = $l->created($w);
    my $esc = join '', map { sprintf '%%%02X', ord } split //, $id;
    $b = $l->answer($l->check($w, $esc), 200, 'an id %-encoded');
    is($b->{lineId}, $id, 'the id it encodes');
    $b = $l->answer($l->check($w, substr($id, 0, 20) . '%' . '6' . 'x'
                                  . substr($id, 22)), 400,
                    'a broken escape');
    like($b->{error}, qr/24/, 'a malformed id');
    $l->answer($l->check($w, '%41' x 24), 400, 'upper case hex, encoded');
    $l->answer($l->check($w, "$id%00"), 400, 'a NUL after the id');

    # two ids: which one the client meant is not known (and a proxy in
    # front may have read the other one)
    $b = $l->answer($l->check($w, "$id&id=" . ('a' x 24)), 400,
                    'two different ids');
    like($b->{error}, qr/more than once/, 'says so');
    $b = $l->answer($l->check($w, "$id&ID=$esc"), 200, 'the same id twice');
    is($b->{lineId}, $id, 'is that id');
    $b = $l->answer($l->check($w, "$id&id="), 400, 'an id and an empty one');
    like($b->{error}, qr/more than once/, 'says so');
};

# Redis gone (SIGKILL) with a read in flight: hiredis answers it NULL
# before its disconnect callback, and the read, which asks again when it
# may, must see the store not connected, not send into the closing
# connection ("redis command not sent", an error that is not one)
subtest 'Redis gone with a read in flight: not connected, nothing sent'
    => sub {
    plan skip_all => 'one Redis (LG_REDIS unset)'
        unless $s->topology eq 'single';
    my $w = ws();
    my $id = $l->created($w);
    my $path = "$LG::Lines::CREATE/$id";
    # the key cached by both workers (new connections)
    $l->parallel([$w, GET => $path]) for 1 .. 8;

    # Redis stopped, the read sent, then Redis killed: its sockets
    # closed under the commands in flight
    my $mark = length $s->error_log;
    my $pid = delete $s->{pids}{redis};
    delete $s->{redis};
    kill 'STOP', $pid;
    my $t0 = Time::HiRes::time();
    my ($tx) = $l->during([$w, GET => $path], sub {
        return 0 if Time::HiRes::time() - $t0 < 0.2;
        kill 'KILL', $pid;
        waitpid $pid, 0;
        return 1;
    }, 5);
    # killed in any case (an answer come too soon)
    kill 'KILL', $pid;
    waitpid $pid, 0;
    ok($tx, 'answered') or return;
    is($tx->res->code, 503, 'store unavailable');
    my $log = substr $s->error_log, $mark;
    like($log, qr/redis disconnected/, 'the connection lost, logged');
    unlike($log, qr/redis (?:command|pipeline) not sent/,
           'no command sent into the closing connection');

    $mark = length $s->error_log;
    $s->start_redis;
    ok($s->wait_redis_connected($mark, 10), 'Redis back');
};

done_testing;
