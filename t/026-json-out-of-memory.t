# A request body whose parse (or whose idempotency fingerprint) runs out
# of memory is the server's failure, not the client's: 500 INTERNAL_ERROR
# in the API's format, nothing written, the same body served once memory
# is back. Before, jansson's allocation failure read as "Malformed JSON
# body" (400), and the fingerprint's as "The request body could not be
# processed" (400): a client told to fix a body that was fine.
# LG::JanssonFail makes jansson's allocations of chosen sizes fail in
# nginx (an LD_PRELOAD library built here).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::JanssonFail qw(jansson_fail);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);
use LG::Provision;

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $p = LG::Provision->new($s);
my $r = $s->redis;

# A body of more than 512 members: jansson 2.14 grows its object's table
# to 1,024 buckets of 16 bytes, the one allocation of 16,384 bytes of the
# parse (its failure leaves jansson's error empty). Sizes read from
# jansson 2.14's allocations: with another jansson nothing may fail, and
# the check that the failing request failed says so.
my $TABLE_SIZE = 1024 * 16;

sub many { return map { sprintf('k%03d', $_) => 0 } 1 .. 601 }

sub no_lines {
    my ($w, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($l->list($w), 200, "$name: by-user");
    is(scalar @{ $b->{lines} // [] }, 0, "$name: no line request made");
}

sub out_of_memory {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->error_is($tx, 500, 'INTERNAL_ERROR', $name);
    unlike($tx->res->body, qr/Malformed|could not be processed/,
           "$name: the body is not blamed");
    return $b;
}

subtest 'line request: the body parse runs out of memory' => sub {
    my $w = $l->workspace('org_oom1');
    my $body = body(many());
    my $off = length $s->error_log;

    jansson_fail($TABLE_SIZE);
    out_of_memory($l->create($w, $body), 'create');
    jansson_fail();

    like(substr($s->error_log, $off), qr/out of memory parsing the JSON body/,
         'logged as the server\'s failure');
    no_lines($w, 'after the 500');

    $l->answer($l->create($w, $body), 201, 'the same body, memory back');
};

subtest 'line request: the idempotency fingerprint runs out of memory'
    => sub {
    my $w = $l->workspace('org_oom2');
    my $body = body(idempotencyKey => 'oom-key-1',
                    many());
    # the fingerprint's copy has every member but the key; jansson's
    # sorted dump allocates one entry per member (16 bytes in 2.14, a
    # pointer before)
    my $members = keys(%$body) - 1;

    my $records = () = $r->keys('*:idem:?*');

    jansson_fail($members * 16, $members * 8);
    out_of_memory($l->create($w, $body), 'create with a key');
    jansson_fail();

    no_lines($w, 'after the 500');
    is(scalar(() = $r->keys('*:idem:?*')), $records,
       'no idempotency record');

    my $b = $l->answer($l->create($w, $body), 201, 'the same body again');
    my $again = $l->answer($l->create($w, $body), 201, 'and replayed');
    is($again->{id}, $b->{id}, 'the key holds once memory is back');
};

subtest 'provision-confirm: the body parse runs out of memory' => sub {
    $p->inventory($p->numbers(2));
    my $a = $p->account('acct_oom');
    my $token = $p->token($a);

    jansson_fail($TABLE_SIZE);
    my $tx = $p->confirm($a, {preview_token => $token, many()});
    jansson_fail();

    is($tx->res->code, 500, 'confirm: 500') or diag $tx->res->body;
    unlike($tx->res->body, qr/Malformed/, 'confirm: the body is not blamed');
    is_deeply($p->lines('acct_oom'), {}, 'confirm: no line');

    $tx = $p->confirm($a, {preview_token => $token, many()});
    is($tx->res->code, 200, 'the same confirm, memory back: the purchase')
        or diag $tx->res->body;
};

done_testing;
