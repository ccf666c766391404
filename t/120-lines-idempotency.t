# Idempotent creation (SPEC 2.4): replay byte for byte with
# Idempotent-Replayed, 422 on another body, 409 while in flight, the key
# from the header or the body, per-workspace scope, 24 h, and which
# answers are kept (201, 403, 409) and which free the key (4xx, 5xx).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA ();
use Mojo::JSON qw(decode_json encode_json);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;
my $n = 0;

sub ws { return $l->workspace('org_i' . ++$n, @_) }

sub key { return ('Idempotency-Key' => $_[0]) }

sub count_ids {
    my @ids = $l->request_ids($_[0]);
    return scalar @ids;
}

sub replayed {
    my ($tx, $first, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $l->answer($tx, $first->res->code, $name);
    is($tx->res->body, $first->res->body, "$name: the same bytes");
    is($tx->res->headers->header('Idempotent-Replayed'), 'true',
       "$name: Idempotent-Replayed: true");
    like($tx->res->headers->header('RateLimit') // '', qr/^"workspace"/,
         "$name: RateLimit");
}

subtest 'the same key and body replay the first answer' => sub {
    my $w = ws();
    my $first = $l->create($w, body(), key('k-1'));
    my $b = $l->answer($first, 201, 'first');
    ok(!defined $first->res->headers->header('Idempotent-Replayed'),
       'first: not a replay');

    replayed($l->create($w, body(), key('k-1')), $first, 'again');
    replayed($l->create($w, body(), key('k-1')), $first, 'and again');
    is(count_ids($w), 1, 'one request created');

    # the stored answer is the stored answer, whatever happened since
    $l->activate($b->{line}{_id});
    replayed($l->create($w, body(), key('k-1')), $first,
             'after the line went active');

    my $h = {$r->hgetall("lg:{ws:$w->{id}}:idem:"
                         . Digest::SHA::sha256_hex('k-1'))};
    is($h->{state}, 'done', 'kept as done');
    is($h->{status}, 201, 'with its status');
    my $ttl = $r->ttl("lg:{ws:$w->{id}}:idem:"
                      . Digest::SHA::sha256_hex('k-1'));
    ok($ttl > 86_000 && $ttl <= 86_400, "kept 24 h ($ttl s)");
};

subtest 'the key in the body, or in both' => sub {
    my $w = ws();
    my $first = $l->create($w, body(idempotencyKey => 'b-1'));
    $l->answer($first, 201, 'key in the body');
    replayed($l->create($w, body(idempotencyKey => 'b-1')), $first,
             'body key again');
    replayed($l->create($w, body(), key('b-1')), $first,
             'the same key in the header: the same request');
    replayed($l->create($w, body(idempotencyKey => 'b-1'), key('b-1')),
             $first, 'both, equal');

    my $before = $l->state_keys($w);
    $l->invalid_field($l->create($w, body(idempotencyKey => 'b-2'),
                                 key('b-3')),
                      'idempotencyKey', 'both, different: 400');
    $l->state_unchanged($w, $before, 'nothing written');
    is(count_ids($w), 1, 'still one request');

    # two headers: the same key twice is that key; two keys are refused
    # (before, nginx 1.22 kept the first and ignored the second, 1.23+
    # would join them as "b-4, b-5": a key neither names)
    my $two = sub {
        my @keys = @_;
        my $tx = $s->ua->build_tx(POST => $s->url('/api/line-requests')
                                  => $w->{auth} => json => body());
        $tx->req->headers->add('Idempotency-Key' => $_) for @keys;
        return $s->ua->start($tx);
    };
    replayed($two->('b-1', 'b-1'), $first, 'the same key twice: that key');
    $before = $l->state_keys($w);
    $l->invalid_field($two->('b-4', 'b-5'), 'idempotencyKey',
                      'two different keys: 400');
    $l->state_unchanged($w, $before, 'nothing written');
    is(count_ids($w), 1, 'still one request');
};

subtest 'the fingerprint is of the canonical body' => sub {
    my $w = ws();
    my $a = '{"firstName":"Ada","lastName":"L","channelType":"phone"}';
    my $b = qq({ "channelType" : "phone",\n "lastName":"L", "firstName":)
          . qq("Ada" });
    my $first = $l->create($w, \$a, key('c-1'));
    $l->answer($first, 201, 'first');
    replayed($l->create($w, \$b, key('c-1')), $first,
             'other key order and spacing');
};

# Every field of a creation reads null as absent (json.c): the same
# parameters, so the same request (before, a retry that sent null where
# the first left the field out was a 422 IDEMPOTENCY_KEY_MISMATCH)
subtest 'a field null and the field absent: the same request' => sub {
    my $w = ws();
    my $a = '{"firstName":"Ada","lastName":"L","channelType":"phone"}';
    my $b = '{"firstName":"Ada","lastName":"L","channelType":"phone",'
          . '"forwardCallsTo":null,"profileImageUrl":null}';
    my $first = $l->create($w, \$a, key('n-1'));
    $l->answer($first, 201, 'absent first');
    replayed($l->create($w, \$b, key('n-1')), $first, 'then null');

    $first = $l->create($w, \$b, key('n-2'));
    $l->answer($first, 201, 'null first');
    replayed($l->create($w, \$a, key('n-2')), $first, 'then absent');
    is(count_ids($w), 2, 'two requests created, one per key');

    # a value is still another request
    $l->error_is($l->create($w, body(forwardCallsTo => '+15551234567'),
                            key('n-1')),
                 422, 'IDEMPOTENCY_KEY_MISMATCH', 'a value where null was');
};

subtest 'another body with the key: 422' => sub {
    my $w = ws();
    $l->answer($l->create($w, body(), key('m-1')), 201, 'first');
    my $before = $l->state_keys($w);
    my $b = $l->error_is($l->create($w, body(lastName => 'Other'),
                                    key('m-1')),
                         422, 'IDEMPOTENCY_KEY_MISMATCH', 'another body');
    $l->state_unchanged($w, $before, 'nothing written');
    $l->error_is($l->create($w, body(unknown => 1), key('m-1')), 422,
                 'IDEMPOTENCY_KEY_MISMATCH', 'an extra field is another body');

    # an unknown field may hold a "\u0000": what follows it counts too
    $l->answer($l->create($w, body(note => "a\0b"), key('m-2')), 201,
               'a NUL in an unknown field');
    $l->error_is($l->create($w, body(note => "a\0c"), key('m-2')), 422,
                 'IDEMPOTENCY_KEY_MISMATCH', 'another after the NUL');
};

subtest 'keys: 1 to 255 printable ASCII characters' => sub {
    my $w = ws();
    for my $case (['', 'empty'], ['x' x 256, '256 characters'],
                  ["a\tb", 'a tab'], ["caf\x{e9}", 'non-ASCII'])
    {
        my ($k, $name) = @$case;
        my $tx = $name eq 'non-ASCII'
               ? $l->create($w, body(idempotencyKey => $k))
               : $l->create($w, body(), key($k));
        $l->invalid_field($tx, 'idempotencyKey', "key $name");
    }
    $l->invalid_field($l->create($w, body(idempotencyKey => 5)),
                      'idempotencyKey', 'a number in the body');
    $l->invalid_field($l->create($w, body(idempotencyKey => "a\x{7f}")),
                      'idempotencyKey', 'DEL in the body');
    # valid JSON ("\u0000"), never a key cut short at its NUL
    my $b = $l->invalid_field($l->create($w, body(idempotencyKey => "k\0")),
                              'idempotencyKey', 'a NUL in the body');
    like($b->{error}, qr/printable ASCII/, 'a NUL: not printable');
    is(count_ids($w), 0, 'nothing created');

    $l->answer($l->create($w, body(), key('x' x 255)), 201, '255 characters');
    $l->answer($l->create($w, body(), key('a b ~!@#$%^&*()')), 201,
               'printable punctuation and spaces');
};

subtest 'keys are scoped to the workspace' => sub {
    my ($w, $v) = (ws(), ws());
    my $a = $l->create($w, body(), key('shared'));
    my $b = $l->create($v, body(), key('shared'));
    $l->answer($a, 201, 'workspace A');
    $l->answer($b, 201, 'workspace B');
    isnt($a->res->body, $b->res->body, 'two requests');
    ok(!defined $b->res->headers->header('Idempotent-Replayed'),
       'not a replay of A');
    $l->answer($l->create($v, body(lastName => 'X'), key('shared')), 422,
               'B\'s key is B\'s');
};

subtest '403 and 409 are kept and replayed' => sub {
    my $w = ws(status => 'canceled');
    my $first = $l->create($w, body(), key('s-1'));
    $l->answer($first, 403, 'subscription_required');
    $l->set_workspace($w, subscriptionStatus => 'active');
    replayed($l->create($w, body(), key('s-1')), $first,
             '403 replayed after the subscription came back');
    $l->answer($l->create($w, body(), key('s-2')), 201, 'a new key works');

    my $m = ws(plan => 'mini');
    $first = $l->create($m, body(), key('f-1'));
    $l->answer($first, 403, 'forbidden_line_type');
    replayed($l->create($m, body(), key('f-1')), $first, '403 replayed');

    my $x = ws();
    my ($pending) = $l->awaiting($x);
    $first = $l->create($x, body(), key('p-1'));
    my $b = $l->answer($first, 409, 'pending');
    is($b->{pendingRequestId}, $pending, 'names the pending request');
    $l->answer($l->manage($x, $pending, 'cancel'), 200, 'canceled');
    replayed($l->create($x, body(), key('p-1')), $first,
             '409 replayed after the pending request went');
};

subtest 'failures free the key' => sub {
    my $w = ws();
    $l->invalid_field($l->create($w, body(lastName => undef), key('e-1')),
                      'lastName', '400');
    $l->answer($l->create($w, body(), key('e-1')), 201,
               'the corrected body, same key');

    my $ro = ws(status => 'past_due');
    $l->answer($l->create($ro, body(), key('e-2')), 402, '402');
    $l->set_workspace($ro, subscriptionStatus => 'active');
    $l->answer($l->create($ro, body(), key('e-2')), 201,
               'after payment, same key');

    my $x = ws();
    $l->fault(status => 500, path_prefix => '/v1/invoiceitems');
    my $body = body(channelType => 'email', email => 'e@example.com');
    $l->error_is($l->create($x, $body, key('e-3')), 502,
                 'BILLING_UNAVAILABLE', 'Stripe failed');
    ok(!$r->exists("lg:{ws:$x->{id}}:idem:"
                   . Digest::SHA::sha256_hex('e-3')), 'the key is free');
    my $b = $l->answer($l->create($x, $body, key('e-3')), 201,
                       'retried with the same key');
    is($b->{status}, 'awaiting_payment', 'now billed');
    is(count_ids($x), 1, 'one request');
    $l->clear_faults;
};

subtest 'a call in flight: 409 IDEMPOTENCY_KEY_IN_USE' => sub {
    my $w = ws();
    my $body = body(channelType => 'email', email => 'e@example.com');
    $l->fault(latency_ms => 1500, path_prefix => '/v1/invoices',
              method => 'POST');

    my $inner;
    my ($tx) = $l->during(
        [$w, POST => '/api/line-requests', $body, key('f-1')],
        sub {
            return 0 unless $l->pending($w);
            $inner //= $l->create($w, $body, key('f-1'));
            return 1;
        });
    $l->answer($tx, 201, 'the first call');
    ok($inner, 'a second call was made while the first ran');
    $l->error_is($inner, 409, 'IDEMPOTENCY_KEY_IN_USE', 'the second');
    ok(!defined $inner->res->headers->header('Idempotent-Replayed'),
       'not a replay');

    replayed($l->create($w, $body, key('f-1')), $tx, 'after it finished');
    my @inv = $l->invoices($w->{customer});
    is(scalar @inv, 1, 'one invoice');
};

done_testing;
