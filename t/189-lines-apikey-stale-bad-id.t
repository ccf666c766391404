# An API key whose worker cache entry has expired (linegate_api_key_cache)
# and a GET of a malformed id. The GET by id checks an expired entry's
# workspace in its own pipeline; a malformed id instead takes the script
# in "gate" mode, which took the key's digest (what the request held in
# place of a workspace) for the workspace: admitted there, answered 400,
# and the cache taught that the key belongs to a workspace named by its
# digest. Until that entry expired, by-user answered an empty list, GETs
# 404, and a revoked key kept its answers. Now such a key is looked up
# first, as a key never seen.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use Digest::SHA qw(sha256_hex);
use LG::Stack;
use LG::Test;
use LG::Lines;

my $s = LG::Stack->new->start;
my $l = LG::Lines->new($s);
my $r = $s->redis;

my $w = $l->workspace('org_stale_id');
my $id = $l->created($w);

# over the test's kept-alive connection: the same worker every time
sub lines_seen { scalar @{ $l->list($w)->res->json->{lines} // [] } }

subtest 'a valid key: 400, and it still names its workspace' => sub {
    is(lines_seen(), 1, 'by-user lists the line (the key learned)');
    sleep 0.7;    # past the plain 500 ms: the entry has expired
    my $tx = $l->req($w, GET => '/api/line-requests/NOTANID');
    is($tx->res->code, 400, 'a malformed id: 400');
    is(lines_seen(), 1, 'by-user right after: the workspace\'s line');
    is($l->get($w, $id)->res->code, 200, 'the GET of the line: 200');
    is(scalar(my @junk = $r->keys('lg:{ws:' . ('?' x 64) . '}*')), 0,
       'no key under a workspace named by the digest');
};

subtest 'a key revoked behind linegate\'s back: 401, not 400' => sub {
    my $k = $s->op(POST => "/workspaces/$w->{id}/keys")->res->json;
    ok($k && $k->{key}, 'a second key') or return;
    my $auth = {Authorization => "Bearer $k->{key}"};
    is($l->req($auth, GET => '/api/lines/by-user')->res->code, 200,
       'read with it (learned)');
    # gone from the store, nothing told to the workers
    $r->del('lg:apikey:' . sha256_hex($k->{key}));
    $r->hdel("lg:{ws:$w->{id}}:keys", $k->{keyId});
    sleep 0.7;
    is($l->req($auth, GET => '/api/line-requests/NOTANID')->res->code, 401,
       'a malformed id with the revoked key: 401');
    is($l->req($auth, GET => '/api/lines/by-user')->res->code, 401,
       'and by-user: 401');
};

done_testing;
