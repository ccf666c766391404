# Redis unavailable (SPEC 1): every Lines API endpoint answers 503
# STORE_UNAVAILABLE with Retry-After, nothing half-written; answers come
# back once Redis does.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);

my $w = $l->workspace('org_store');
my $id = $l->created($w);
my ($pending) = $l->awaiting($w);

my @calls = (
    ['create', sub { $l->create($w, body()) }],
    ['create with a key', sub { $l->create($w, body(), 'Idempotency-Key'
                                           => 'st-1') }],
    ['GET', sub { $l->get($w, $id) }],
    ['GET, Clerk', sub { $l->req($w->{clerk}, GET =>
                                 "/api/line-requests/$id") }],
    ['GET, bad id', sub { $l->get($w, 'bad') }],
    ['by-user', sub { $l->list($w) }],
    ['check-availability', sub { $l->check($w, $id) }],
    ['cancel', sub { $l->manage($w, $pending, 'cancel') }],
    ['payment_link', sub { $l->manage($w, $pending, 'payment_link') }],
);

$s->stop_redis;

for my $c (@calls) {
    my ($name, $call) = @$c;
    my $tx = $call->();
    my $b = $l->error_is($tx, 503, 'STORE_UNAVAILABLE', "$name, Redis down");
    is($tx->res->headers->header('Retry-After'), '1', "$name: Retry-After");
}

my $offset = length $s->error_log;
$s->start_redis;
ok($s->wait_redis_connected($offset, 5), 'the workers reconnect');

# the Redis of the test was empty again: set the workspace up anew
my $again = $l->workspace('org_store_2');
$l->answer($l->list($again), 200, 'answers again');
$l->answer($l->create($again, body()), 201, 'creates again');

done_testing;
