# POST /api/line-requests (SPEC 2.2-2.4, 2.8): every row of the plan table,
# subscription statuses, the outcome bodies, what is stored, the Stripe
# calls of an add-on, and every validation rule.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Mojo::JSON qw(decode_json);
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $ISO = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my $n = 0;

sub ws { return $l->workspace('org_c' . ++$n . ($_[0] // ''), @_[1 .. $#_]) }

sub included {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($tx, 201, $name);
    is($b->{status}, 'provisioning', "$name: provisioning");
    is($b->{paymentStatus}, 'not_required', "$name: not_required");
    is($b->{paymentRequired}, Mojo::JSON->false, "$name: no payment");
    ok(!exists $b->{paymentUrl}, "$name: no paymentUrl");
    return $b;
}

sub addon {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($tx, 201, $name);
    is($b->{status}, 'awaiting_payment', "$name: awaiting_payment");
    is($b->{paymentStatus}, 'unpaid', "$name: unpaid");
    is($b->{paymentRequired}, Mojo::JSON->true, "$name: payment required");
    like($b->{invoiceId} // '', qr/^in_/, "$name: invoiceId");
    like($b->{paymentUrl} // '', qr{^https://127\.0\.0\.1:\d+/i/in_},
         "$name: paymentUrl is the hosted invoice");
    return $b;
}

sub refused {
    my ($tx, $status, $state, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($tx, $status, $name);
    is($b->{success}, Mojo::JSON->false, "$name: success false");
    is($b->{status}, $state, "$name: $state");
    like($b->{message} // '', qr/\w/, "$name: message");
    return $b;
}

sub phone { $l->create($_[0], body(channelType => 'phone', @_[1 .. $#_])) }
sub email { $l->create($_[0], body(channelType => 'email',
                                   email => 'ada@example.com',
                                   @_[1 .. $#_])) }

# free the workspace's pending request so the next add-on can be asked for
sub cancel_pending {
    my ($w) = @_;
    my $id = $l->pending($w) or return;
    $l->answer($l->manage($w, $id, 'cancel'), 200, 'cancel the pending');
}

subtest 'plan mini: no phone; first email included, then paid' => sub {
    my $w = ws('mini', plan => 'mini');
    refused(phone($w), 403, 'forbidden_line_type', 'mini phone');
    included(email($w), 'mini first email');
    addon(email($w), 'mini second email');
    cancel_pending($w);
    refused(phone($w, lineType => 'byon', phone => '+14155550123',
                  email => 'b@example.com'), 403, 'forbidden_line_type',
            'mini BYON phone');
};

subtest 'plan starter: one phone line, hard cap; email paid' => sub {
    my $w = ws('starter', plan => 'starter');
    included(phone($w), 'starter first phone');
    refused(phone($w), 403, 'forbidden_line_type', 'starter second phone');
    addon(email($w), 'starter first email is paid');
};

subtest 'plan growth: two phone lines included, then paid; email paid' => sub {
    my $w = ws('growth', plan => 'growth');
    included(phone($w), 'growth phone 1');
    included(phone($w), 'growth phone 2');
    my $b = addon(phone($w), 'growth phone 3');
    is($b->{line}{channelType}, 'phone', 'a paid phone line');
    cancel_pending($w);
    addon(email($w), 'growth email');
};

subtest 'live lines: provisioning and active count, failed and canceled do not'
    => sub {
    my $w = ws('live', plan => 'starter');
    my $id = $l->created($w);
    $l->activate($id);
    refused(phone($w), 403, 'forbidden_line_type', 'an active line counts');

    my $x = ws('live2', plan => 'starter');
    $id = $l->created($x);
    $s->op(POST => "/lines/$id/failed", {reason => 'carrier said no'});
    included(phone($x), 'a failed line does not count');

    my $g = ws('live3', plan => 'growth');
    $l->created($g, lineType => 'byon', phone => '+14155550100',
                email => 'byon@example.com');
    included(phone($g), 'growth: BYON counts as phone, 1 of 2');
    addon(phone($g), 'growth: BYON + purchased = 2, the third is paid');
    my $pending = $l->pending($g);
    $l->answer($l->manage($g, $pending, 'cancel'), 200, 'cancel it');
    addon(phone($g), 'a canceled request does not count');
};

subtest 'subscription statuses' => sub {
    my $t = ws('trial', status => 'trialing');
    included(phone($t), 'trialing may request');

    for my $st (qw(past_due unpaid)) {
        my $w = ws($st, status => $st);
        my $before = $l->state_keys($w);
        my $b = $l->answer(phone($w), 402, "$st");
        is_deeply($b, {error => 'READ_ONLY', code => 'READ_ONLY',
                       reason => $st}, "$st: body");
        $l->state_unchanged($w, $before, "$st: nothing written");
        $l->answer($l->list($w), 200, "$st: reads still work");
    }

    for my $st (qw(canceled incomplete incomplete_expired paused), undef) {
        my $name = $st // 'no subscription';
        my $w = ws('sub', status => $st);
        my $b = refused(phone($w), 403, 'subscription_required', $name);
        is($b->{redirect}, '/billing', "$name: redirect");
        my @ids = $l->request_ids($w);
        is(scalar @ids, 0, "$name: no request");
    }

    # a verified organization that was never set up in linegate
    my $tok = $s->clerk_token(o => {id => 'org_never_seen'});
    my $b = refused($l->create({Authorization => "Bearer $tok"}), 403,
                    'subscription_required', 'unknown workspace (Clerk)');
};

subtest 'the 201 bodies and the line object (SPEC 2.8)' => sub {
    my $w = ws('body', plan => 'growth');
    my $tx = phone($w, firstName => '  Grace ', lastName => 'Hopper',
                   zipcode => '94105-1234', state => 'ca',
                   forwardCallsTo => '+14155550199',
                   profileImageUrl => 'https://example.com/g.png',
                   email => 'grace@example.com', unknownField => [1]);
    my $b = included($tx, 'included');
    is_deeply([sort keys %$b],
              [qw(line paymentRequired paymentStatus status success)],
              'included: fields');
    my $line = $b->{line};
    like($line->{_id}, qr/^[0-9a-f]{24}$/, '_id: 24 lowercase hex');
    my $t = hex substr($line->{_id}, 0, 8);
    ok(abs($t - time) < 5, '_id starts with the Unix time');
    is_deeply([sort keys %$line], [sort qw(_id workspaceId firstName
        lastName channelType lineType phone email forwardCallsTo
        profileImageUrl isActive provisioningStatus paymentStatus
        dailyNewConversationsLimit dailyTotalMessagesLimit usage
        healthCheck createdAt updatedAt)], 'line: the fields of SPEC 2.8');
    is($line->{workspaceId}, $w->{id}, 'workspaceId');
    is($line->{firstName}, 'Grace', 'firstName trimmed');
    is($line->{lineType}, 'purchased', 'lineType defaults to purchased');
    is($line->{phone}, undef, 'phone null until set up');
    is($line->{email}, 'grace@example.com', 'email');
    is($line->{forwardCallsTo}, '+14155550199', 'forwardCallsTo');
    is($line->{profileImageUrl}, 'https://example.com/g.png', 'image');
    is($line->{isActive}, Mojo::JSON->false, 'not active');
    is($line->{provisioningStatus}, 'provisioning', 'provisioningStatus');
    is($line->{dailyNewConversationsLimit}, 20, 'default daily limit 20');
    is($line->{dailyTotalMessagesLimit}, 50, 'default daily limit 50');
    my @d = gmtime;
    is_deeply($line->{usage}, {
        date => sprintf('%04d-%02d-%02d', $d[5] + 1900, $d[4] + 1, $d[3]),
        newConversationsCount => 0, totalMessagesCount => 0,
    }, 'usage of UTC today');
    is($line->{healthCheck}, undef, 'healthCheck null');
    like($line->{createdAt}, $ISO, 'createdAt ISO 8601 with ms');
    is($line->{updatedAt}, $line->{createdAt}, 'updatedAt');

    my $h = $l->lr($w, $line->{_id});
    is($h->{zipcode}, '94105-1234', 'zipcode stored');
    is($h->{state}, 'CA', 'state stored upper case');
    is($h->{provisioningStatus}, 'provisioning', 'stored status');
    is($h->{paymentStatus}, 'not_required', 'stored payment status');
    is($r->get("lg:line:$line->{_id}"), $w->{id}, 'lg:line:<id> -> W');
    is_deeply([$l->request_ids($w)], [$line->{_id}], 'listed');
    ok(!defined $l->pending($w), 'nothing pending');
    # on a cluster nginx relays the entry after the answer
    my $e;
    ok(eventually(sub { ($e) = grep { $_->{id} eq $line->{_id} } $l->stream;
                        $e }, 5),
       'appended to lg:provisioning');
    is_deeply($e, {workspace => $w->{id}, id => $line->{_id},
                   channelType => 'phone', lineType => 'purchased',
                   at => $line->{createdAt}}, 'the stream entry');

    # email lines: purchased, no phone details
    $tx = email($w, lineType => 'byon', phone => '+14155550123',
                forwardCallsTo => '+14155550124', zipcode => '12345');
    $b = addon($tx, 'email add-on');
    $line = $b->{line};
    is($line->{lineType}, 'purchased', 'email lines report purchased');
    is($line->{phone}, undef, 'no phone on an email line');
    is($line->{forwardCallsTo}, undef, 'no forwarding on an email line');
    is_deeply([sort keys %$b], [qw(invoiceId line paymentRequired
        paymentStatus paymentUrl status success)], 'add-on: fields');
    $h = $l->lr($w, $line->{_id});
    ok(!exists $h->{zipcode} && !exists $h->{phone}, 'not stored either');
    is($h->{invoiceId}, $b->{invoiceId}, 'invoiceId stored');
    is($h->{paymentUrl}, $b->{paymentUrl}, 'paymentUrl stored');
    is($l->pending($w), $line->{_id}, 'the pending marker');
    is($r->get("lg:invoice:$b->{invoiceId}"), "$w->{id}:$line->{_id}",
       'lg:invoice:<in> -> W:<id>');
    ok(!grep({ $_->{id} eq $line->{_id} } $l->stream),
       'not in the provisioning stream yet');

    # BYON phone lines keep their number
    cancel_pending($w);
    my $x = ws('byon', plan => 'growth');
    $b = included(phone($x, lineType => 'byon', phone => '+447700900123',
                        email => 'own@example.com', zipcode => '12345'),
                  'BYON');
    is($b->{line}{lineType}, 'byon', 'lineType byon');
    is($b->{line}{phone}, '+447700900123', 'its number');
    ok(!exists $l->lr($x, $b->{line}{_id})->{zipcode},
       'zipcode is for purchased lines');
};

subtest 'the invoice of an add-on, as Stripe sees it' => sub {
    my $w = ws('stripe', plan => 'growth');
    my (undef, $b) = $l->awaiting($w);
    my $id = $b->{line}{_id};
    my $inv = $l->invoice($b->{invoiceId});

    is($inv->{customer}, $w->{customer}, 'the workspace\'s customer');
    is($inv->{status}, 'open', 'finalized: open');
    is($inv->{collection_method}, 'send_invoice', 'send_invoice');
    ok($inv->{days_until_due} > 0, 'days_until_due');
    is_deeply($inv->{metadata}, {workspace_id => $w->{id},
                                 line_request_id => $id}, 'metadata');
    is(scalar @{ $inv->{lines}{data} }, 1, 'one item');
    is($inv->{lines}{data}[0]{price}{id}, 'price_email_addon',
       'at the email add-on price');
    is($inv->{hosted_invoice_url}, $b->{paymentUrl}, 'its hosted URL');

    my @log = $l->stripe_log(qr{^/v1/(invoices|invoiceitems)});
    my @mine = grep { ($_->{idempotency_key} // '') =~ /^lg-\Q$id\E-/ } @log;
    is_deeply([map { "$_->{method} $_->{path} $_->{idempotency_key}" }
               @mine],
              ["POST /v1/invoices lg-$id-invoice",
               "POST /v1/invoiceitems lg-$id-item",
               "POST /v1/invoices/$b->{invoiceId}/finalize lg-$id-finalize"],
              'draft, item, finalize, with keys derived from the id');
    is($mine[0]{params}{pending_invoice_items_behavior}, 'exclude',
       'pending items of the customer stay out');
    is($mine[1]{params}{invoice}, $b->{invoiceId}, 'the item names it');
    is($mine[1]{params}{pricing}{price}, 'price_email_addon',
       'pricing[price] (2025-03-31.basil)');
    is($mine[0]{stripe_version}, '2025-03-31.basil', 'a pinned version');

    # the phone price for phone add-ons
    cancel_pending($w);
    $l->created($w) for 1 .. 2;
    $b = addon(phone($w), 'phone add-on');
    is($l->invoice($b->{invoiceId})->{lines}{data}[0]{price}{id},
       'price_phone_addon', 'at the phone add-on price');
};

subtest 'at most one request awaits payment (409)' => sub {
    my $w = ws('pending', plan => 'growth');
    my ($first) = $l->awaiting($w);

    my $before = $l->state_keys($w);
    my $b = refused(email($w), 409, 'awaiting_payment', 'second add-on');
    is($b->{pendingRequestId}, $first, 'pendingRequestId');
    is_deeply([sort keys %$b],
              [qw(message pendingRequestId status success)], 'fields');

    refused(phone($w), 409, 'awaiting_payment',
            'an included request is blocked too');
    $l->state_unchanged($w, $before, 'nothing written');

    $l->answer($l->manage($w, $first, 'cancel'), 200, 'cancel the first');
    my ($second) = $l->awaiting($w);
    isnt($second, $first, 'a new request once the first is canceled');

    # provisioning blocks nothing
    my $x = ws('prov', plan => 'growth');
    $l->created($x);
    included(phone($x), 'a provisioning request blocks nothing');
};

subtest 'an add-on without a Stripe customer: 502, nothing written' => sub {
    my $w = ws('nocus', plan => 'growth', customer => '');
    my $before = $l->state_keys($w);
    my $b = $l->error_is(email($w), 502, 'BILLING_UNAVAILABLE', 'no customer');
    $l->state_unchanged($w, $before, 'nothing written');
    like($s->error_log, qr/workspace "\Q$w->{id}\E" has no stripeCustomerId/,
         'a clear log line');
    included(phone($w), 'included lines need no customer');
};

# --- validation (SPEC 2.4) ------------------------------------------------

my $v = ws('valid', plan => 'growth');

sub invalid {
    my ($body, $field, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $before = $l->state_keys($v);
    $l->invalid_field($l->create($v, $body), $field, $name);
    $l->state_unchanged($v, $before, "$name: nothing written");
}

subtest 'names' => sub {
    invalid(body(firstName => undef), 'firstName', 'firstName missing');
    invalid(body(lastName => undef), 'lastName', 'lastName missing');
    invalid(body(firstName => ''), 'firstName', 'firstName empty');
    invalid(body(firstName => '   '), 'firstName', 'firstName blank');
    invalid(body(lastName => 'x' x 101), 'lastName', 'lastName 101 chars');
    # "\u0000" is valid JSON: refused where it is read, as a control
    # character, so that no NUL cuts a stored value short; in a field
    # linegate does not read it is ignored (SPEC: unknown fields are)
    my $b = $l->invalid_field($l->create($v, body(firstName => "A\x{0}B")),
                              'firstName', 'a NUL');
    like($b->{error}, qr/control characters/, 'as a control character');
    for my $f (qw(lastName channelType lineType email phone zipcode state
                  forwardCallsTo profileImageUrl))
    {
        invalid(body($f => "x\x{0}"), $f, "a NUL in $f");
    }
    $b = included($l->create(ws(), body(nickname => "A\x{0}B")),
                  'a NUL in an unknown field');
    is($b->{line}{firstName}, 'Ada', 'the body read');
    invalid(body(firstName => "A\nB"), 'firstName', 'a control character');
    # C1 controls (U+0080 to U+009F) too: U+009B is a terminal's CSI
    invalid(body(firstName => "Bob\x{9b}[2J"), 'firstName',
            'a C1 control (U+009B)');
    invalid(body(lastName => "Ann\x{80}"), 'lastName', 'U+0080');
    invalid(body(lastName => "Ann\x{9f}x"), 'lastName', 'U+009F');
    $b = included($l->create(ws(), body(lastName => "A\x{a0}B\x{c2}")),
                  'U+00A0 and U+00C2 inside a name');
    is($b->{line}{lastName}, "A\x{a0}B\x{c2}", 'kept as given');
    invalid(body(firstName => 5), 'firstName', 'firstName a number');
    invalid(body(lastName => {}), 'lastName', 'lastName an object');

    included($l->create(ws(), body(lastName => 'x' x 100)), '100 characters');
    $b = included($l->create(ws(), body(lastName => "\x{e9}" x 100)),
                     '100 two-byte characters');
    is(length $b->{line}{lastName}, 100, 'counted as characters');
    invalid(body(lastName => "\x{e9}" x 101), 'lastName',
            '101 two-byte characters');
    $b = included($l->create(ws(), body(firstName => " \t Ada \t ")),
                  'spaces around');
    is($b->{line}{firstName}, 'Ada', 'trimmed');

    # trimmed as Tuco's JavaScript trim(): Unicode spaces too (before, a
    # name of U+00A0 alone was a 1-character name)
    invalid(body(firstName => "\x{a0}"), 'firstName', 'U+00A0 alone');
    invalid(body(lastName => "\x{3000}\x{2009} \x{feff}"), 'lastName',
            'Unicode spaces alone');
    my $name = "\x{feff}\x{a0}Ada\x{a0}Byron\x{202f}\x{3000}";
    $b = included($l->create(ws(), body(firstName => $name)),
                  'Unicode spaces around');
    is($b->{line}{firstName}, "Ada\x{a0}Byron", 'trimmed, the inner kept');
};

subtest 'channelType and lineType' => sub {
    invalid(body(channelType => undef), 'channelType', 'channelType missing');
    invalid(body(channelType => 'fax'), 'channelType', 'channelType fax');
    invalid(body(channelType => 'PHONE'), 'channelType', 'case matters');
    invalid(body(channelType => ['phone']), 'channelType', 'an array');
    invalid(body(lineType => 'rented'), 'lineType', 'lineType rented');
    invalid(body(lineType => 1), 'lineType', 'lineType a number');
};

subtest 'email' => sub {
    invalid(body(channelType => 'email'), 'email',
            'required for email lines');
    invalid(body(lineType => 'byon', phone => '+14155550100'), 'email',
            'required for BYON lines');
    for my $bad ('ada', 'ada@', '@example.com', 'ada@example',
                 'ada@@example.com', 'ada @example.com', 'ada@exa_mple.com',
                 '.ada@example.com', 'a..b@example.com', 'ada@-x.com',
                 'a@' . ('x' x 64) . '.com', ('a' x 65) . '@example.com',
                 ('a' x 60) . '@' . join('.', ('b' x 60) x 4) . '.com')
    {
        invalid(body(channelType => 'email', email => $bad), 'email',
                "email '" . substr($bad, 0, 40) . "'");
    }
    invalid(body(channelType => 'email', email => 42), 'email',
            'email a number');
    invalid(body(email => 'nope'), 'email',
            'checked when given for a purchased phone line too');
};

subtest 'phone numbers, zipcode, state' => sub {
    my %byon = (lineType => 'byon', email => 'b@example.com');
    invalid(body(%byon), 'phone', 'phone required for BYON');
    for my $bad ('14155550100', '+1415', '+1234567', '+1234567890123456',
                 '+1 415 555 0100', '+1-415-555-0100', '+1415555010a',
                 '+04155550100')
    {
        invalid(body(%byon, phone => $bad), 'phone', "phone '$bad'");
    }
    invalid(body(%byon, phone => 14155550100), 'phone', 'phone a number');
    invalid(body(forwardCallsTo => '4155550100'), 'forwardCallsTo',
            'forwardCallsTo not E.164');
    # no country code starts with 0: a typo (chars.c's one rule, as the
    # operator API's load and a line's phone)
    invalid(body(forwardCallsTo => '+04155550100'), 'forwardCallsTo',
            'forwardCallsTo with a country code starting with 0');
    invalid(body(forwardCallsTo => 4155550100), 'forwardCallsTo',
            'forwardCallsTo a number');
    for my $bad ('1234', '123456', '12345-678', '12345 6789', 'ABCDE',
                 '12345-67890')
    {
        invalid(body(zipcode => $bad), 'zipcode', "zipcode '$bad'");
    }
    invalid(body(zipcode => 12345), 'zipcode', 'zipcode a number');
    for my $bad ('C', 'CAL', 'C1', '  ') {
        invalid(body(state => $bad), 'state', "state '$bad'");
    }
};

subtest 'profileImageUrl' => sub {
    for my $bad ('ftp://example.com/a.png', 'example.com/a.png',
                 'https://', 'https:///path', 'javascript:alert(1)',
                 'https://exa mple.com/', "https://example.com/\x{e9}",
                 'https://example.com/' . ('a' x 2030))
    {
        invalid(body(profileImageUrl => $bad), 'profileImageUrl',
                'profileImageUrl ' . substr($bad, 0, 30));
    }
    invalid(body(profileImageUrl => ['x']), 'profileImageUrl', 'an array');
    my $ok = 'HTTP://example.com/' . ('a' x (2048 - 19));
    is(length $ok, 2048, 'a URL of 2048 characters');
    included($l->create(ws(), body(profileImageUrl => $ok)), 'is accepted');
};

subtest 'the body as a whole' => sub {
    invalid(\'{"firstName": "A", ', undef, 'malformed JSON');
    invalid(\'[1, 2]', undef, 'not an object');
    invalid(\'"text"', undef, 'a string');
    invalid(\'', undef, 'empty');
    invalid(\"{\"firstName\": \"\xff\"}", undef, 'not UTF-8');
    invalid(\'{"firstName":"A","firstName":"B","lastName":"C",'
            . '"channelType":"phone"}', undef, 'duplicate keys');
    # refused in a field linegate does not read too, as a number no
    # parser holds exactly (docs/lines-api.md, "Validation details")
    my $known = '"firstName":"A","lastName":"C","channelType":"phone"';
    invalid(\"{$known,\"meta\":1,\"meta\":2}", undef,
            'an unknown member given twice');
    invalid(\"{$known,\"x\":1e400}", undef, 'a real over a double');
    invalid(\"{$known,\"x\":18446744073709551616}", undef,
            'an integer over 64 bits');
    my $b = $l->invalid_field($l->create($v, \'{bad'), undef, 'malformed');
    like($b->{error}, qr/JSON/, 'the error says what is wrong');

    # larger than linegate_max_body (16k)
    my $big = body(lastName => 'x' x 20000);
    $b = $l->answer($l->create($v, $big), 400, 'body over 16k');
    is($b->{code}, 'VALIDATION_ERROR', 'a VALIDATION_ERROR');
};

subtest 'the first failing field is named' => sub {
    my $b = $l->invalid_field($l->create($v, body(firstName => undef,
                                                 channelType => 'fax')),
                              'firstName', 'two failures');
    like($b->{error}, qr/firstName/, 'the message names it too');
};

done_testing;
