# A method an endpoint does not serve is a 405 in the API's own error
# format, and names the methods the target has in Allow (RFC 9110
# 15.5.6: an origin server MUST send one with a 405): the endpoint's
# methods (linegate_api's table, docs/directives.md), or every method of
# the operator routes with that path, HEAD wherever GET is (t/025).
# Nothing is written to Redis.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;
use LG::OpenAPI qw(answer_matches);

my $s = LG::Stack->new(stub => 0)->start;
my $r = $s->redis;

my $before = redis_dump($r);

subtest 'the endpoints: Allow is linegate_api\'s methods' => sub {
    my $id = 'a' x 24;
    for my $case (
        [PUT => '/api/line-requests', 'POST',
         { error => 'Method not allowed' }],
        [DELETE => "/api/line-requests/$id", 'GET, HEAD, POST',
         { error => 'Method not allowed' }],
        [POST => '/api/lines/by-user', 'GET, HEAD',
         { error => 'Method not allowed' }],
        [HEAD => '/api/line-requests', 'POST', undef],
        [GET => '/accounts/lines/provision-preview', 'POST',
         { status => 'ERROR', message => 'Method not allowed' }],
        [PATCH => '/accounts/lines/provision-confirm', 'POST',
         { status => 'ERROR', message => 'Method not allowed' }],
        [POST => '/accounts/limits', 'GET, HEAD',
         { status => 'ERROR', message => 'Method not allowed' }],
        [GET => '/webhooks/stripe', 'POST',
         { error => 'Method not allowed' }],
    ) {
        my ($m, $p, $allow, $want) = @$case;
        my $tx = $s->ua->start($s->ua->build_tx($m => $s->url($p)));
        is($tx->res->code, 405, "$m $p: 405");
        is($tx->res->headers->header('Allow'), $allow, "$m $p: Allow");
        is($tx->res->headers->content_type,
           'application/json; charset=utf-8', "$m $p: JSON");
        like($tx->res->headers->header('X-Request-Id') // '',
             qr/^[0-9a-f]{32}$/, "$m $p: X-Request-Id");
        if ($want) {
            is_deeply($tx->res->json, $want, "$m $p: the API's error")
                or diag $tx->res->body;
            answer_matches($tx, "$m $p") unless $m eq 'PATCH';
        } else {
            is($tx->res->body, '', "$m $p: HEAD, no body");
        }
    }
};

subtest 'the operator API: Allow is every method of the path' => sub {
    for my $case ([DELETE => '/workspaces/org_a', 'GET, HEAD, PUT'],
                  [PUT => '/inventory', 'GET, HEAD, POST'],
                  [DELETE => '/workspaces/org_a/keys', 'GET, HEAD, POST'],
                  [GET => '/accounts/acct_a/credentials', 'POST'],
                  # no route has it: refused before the route is known
                  [PATCH => '/workspaces/org_a',
                   'GET, HEAD, POST, PUT, DELETE'],
                  [OPTIONS => '/inventory', 'GET, HEAD, POST, PUT, DELETE'],
                  [PATCH => '/nope', 'GET, HEAD, POST, PUT, DELETE']) {
        my ($m, $p, $allow) = @$case;
        my $tx = $s->op($m => $p);
        my $body = answer_is($tx, 405, "$m $p");
        is_deeply($body, { error => 'Method not allowed' }, "$m $p: error");
        is($tx->res->headers->header('Allow'), $allow, "$m $p: Allow");
    }

    # an unknown path: 404, no Allow
    my $tx = $s->op(DELETE => '/nope');
    answer_is($tx, 404, 'DELETE /nope');
    ok(!defined $tx->res->headers->header('Allow'), 'DELETE /nope: no Allow');
};

is_deeply(redis_dump($r), $before, 'nothing written');

$s->stop;
done_testing;
