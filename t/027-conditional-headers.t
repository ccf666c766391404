# A client's conditional headers (If-Match, If-None-Match,
# If-Unmodified-Since, If-Modified-Since) never change a linegate answer.
# The module's answers carry no validator (no ETag, no Last-Modified), so
# nginx's not_modified filter read every such header against nothing: a
# 200 became 412 or 304, after the work was done. A confirm with
# `If-Match` bought the number and answered 412, its token spent: the
# client never learned the number and a new preview bought a second one.
# Each endpoint is sent each header and must answer as without it: the
# same status, a JSON body, the write made once.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Mojo::JSON qw(decode_json);
use LG::Stack;
use LG::Test;
use LG::Lines;
use LG::Provision;

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $FUTURE = 'Sat, 01 Jan 2099 00:00:00 GMT';
my $PAST = 'Thu, 01 Jan 1998 00:00:00 GMT';

# each header that nginx's filter would have acted on
my @CONDITIONS = (
    ['If-Match' => '"v1"'],
    ['If-None-Match' => '*'],
    ['If-Unmodified-Since' => $PAST],
    ['If-Modified-Since' => $FUTURE],
);

sub json_answer {
    my ($tx, $code, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($tx->res->code, $code, "$name: $code");
    like($tx->res->headers->content_type // '', qr{^application/json},
         "$name: JSON");
    my $b = eval { decode_json($tx->res->body) };
    ok(ref $b eq 'HASH', "$name: a JSON object body")
        or diag($tx->res->body);
    return $b // {};
}

$p->inventory($p->numbers(10));

subtest 'provision-confirm: the purchase is answered' => sub {
    for my $c (@CONDITIONS) {
        my $a = $p->account("acct_c$c->[0]" =~ s/-//gr);
        my $tok = $p->token($a);
        my $before = $r->scard('lg:{fleet}:inventory');
        my $tx = $p->_tx(POST => '/accounts/lines/provision-confirm',
                         {%{ $p->headers($a) }, @$c},
                         json => {preview_token => $tok});
        my $b = json_answer($tx, 200, "confirm with $c->[0]");
        like($b->{phone_number} // '', qr/^\+1\d+$/,
             "confirm with $c->[0]: the number bought is in the answer");
        is($r->scard('lg:{fleet}:inventory'), $before - 1,
           "confirm with $c->[0]: one number taken");
    }
};

subtest 'the Lines API: reads and manage actions' => sub {
    my $w = $l->workspace('org_cond', plan => 'growth');
    my $id = $l->created($w);

    for my $c (@CONDITIONS) {
        json_answer($l->req($w, GET => "/api/line-requests/$id", undef, @$c),
                    200, "GET by id with $c->[0]");
        json_answer($l->req($w, GET => '/api/lines/by-user', undef, @$c),
                    200, "by-user with $c->[0]");
    }

    for my $c (@CONDITIONS) {
        my ($aid) = $l->awaiting($w);
        my $b = json_answer(
            $l->req($w, POST => "/api/line-requests/$aid",
                    {action => 'payment_link'}, @$c),
            200, "payment_link with $c->[0]");
        like($b->{paymentUrl} // "",
             qr/^https?:/, "payment_link with $c->[0]: the link");

        $b = json_answer(
            $l->req($w, POST => "/api/line-requests/$aid",
                    {action => 'cancel'}, @$c),
            200, "cancel with $c->[0]");
        is($l->lr($w, $aid)->{provisioningStatus}, 'canceled',
           "cancel with $c->[0]: canceled");
    }
};

subtest 'the Provisioning API: limits' => sub {
    my $a = $p->account('acct_limits');
    for my $c (@CONDITIONS) {
        my $tx = $p->_tx(GET => '/accounts/limits',
                         {%{ $p->headers($a) }, @$c});
        json_answer($tx, 200, "limits with $c->[0]");
    }
};

subtest 'the operator API: a write is answered' => sub {
    for my $c (@CONDITIONS) {
        my $ws = "org_op$c->[0]" =~ s/-//gr;
        my $tx = $s->op(PUT => "/workspaces/$ws", {plan => 'starter'}, @$c);
        ok($tx->res->code == 200 || $tx->res->code == 201,
           "PUT with $c->[0]: 200 or 201 (" . $tx->res->code . ')');
        my $b = eval { decode_json($tx->res->body) };
        ok(ref $b eq 'HASH', "PUT with $c->[0]: a JSON body");
        is($r->hget("lg:{ws:$ws}", 'plan'), 'starter',
           "PUT with $c->[0]: written");
    }
};

done_testing;
