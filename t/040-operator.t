# The operator API (SPEC section 5): every route's success and error paths.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(sha256_hex);
use POSIX qw(strftime);
use Encode ();
use LG::Stack;
use LG::Test qw(:DEFAULT eventually);

# 1000 numbers per inventory call need a body larger than the 16k default:
# the operator location gets the limits docs/operator.md recommends
my $s = LG::Stack->new(stub => 0,
    HTTP_EXTRA => 'linegate_max_body 64k; client_body_buffer_size 64k;',
)->start;
my $r = $s->redis;

my $ISO = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my @secrets;    # every key and secret issued: never in logs or Redis

sub line_id { sprintf('%08x', time) . join '', map { sprintf '%02x', int rand 256 } 1 .. 8 }

# a line request as the Lines API would have stored it
sub seed_line {
    my ($w, %f) = @_;
    my $id = line_id();
    $r->hset("lg:{ws:$w}:lr:$id", firstName => 'Ada', lastName => 'Lovelace',
             channelType => 'phone', lineType => 'purchased',
             provisioningStatus => 'provisioning',
             paymentStatus => 'not_required',
             createdAt => '2026-01-01T00:00:00.000Z',
             updatedAt => '2026-01-01T00:00:00.000Z', %f);
    $r->set("lg:line:$id", $w);
    return $id;
}

subtest 'authentication' => sub {
    my $url = $s->url('/_linegate/workspaces/org_auth');

    my $tx = $s->ua->get($url);
    json_error_is($tx, 401, undef, 'no token', qr/^Unauthorized$/);

    $tx = $s->ua->get($url => {Authorization => 'Bearer wrong-token-0123456789'});
    json_error_is($tx, 401, undef, 'wrong token');

    $tx = $s->ua->get($url => {Authorization => 'Bearer ' . $s->operator_token . 'x'});
    json_error_is($tx, 401, undef, 'token with a suffix');

    $tx = $s->ua->get($url => {Authorization => 'Basic ' . $s->operator_token});
    json_error_is($tx, 401, undef, 'not a bearer token');

    $tx = $s->ua->get($s->url('/_linegate/nothing-here'));
    json_error_is($tx, 401, undef, 'unknown route without token: 401 first');
    is($tx->res->headers->header('WWW-Authenticate'), 'Bearer',
       'the Bearer challenge (RFC 9110 11.6.1)');
};

subtest 'routing' => sub {
    my $body = answer_is($s->op(GET => '/nothing-here'), 404, 'unknown route');
    is_deeply($body, {error => 'Not found'}, 'unknown route: body');

    answer_is($s->op(GET => '/workspaces'), 404, 'missing id');
    answer_is($s->op(GET => '/workspaces/a/b/c/d'), 404, 'too deep');
    answer_is($s->op(GET => '/workspaces//keys'), 404, 'empty segment');

    $body = answer_is($s->op(DELETE => '/workspaces/org_x'), 405,
                      'DELETE on a workspace');
    is($body->{error}, 'Method not allowed', '405 body');
    answer_is($s->op(GET => '/lines/' . line_id() . '/active'), 405,
              'GET on a transition');
    answer_is($s->op(POST => '/provisioning', {}), 405, 'POST on a stream');
};

subtest 'workspaces' => sub {
    my $w = 'org_2abcDEF_-9';
    my $before = redis_dump($r);

    my $body = json_error_is($s->op(PUT => "/workspaces/$w",
                                    {subscriptionStatus => 'active'}),
                             400, 'VALIDATION_ERROR', 'create without plan');
    is($body->{field}, 'plan', 'create without plan: names the field');

    $body = json_error_is($s->op(PUT => "/workspaces/$w", {plan => 'gold'}),
                          400, 'VALIDATION_ERROR', 'invalid plan',
                          qr/mini, starter or growth/);
    is($body->{field}, 'plan', 'invalid plan: names the field');

    $body = json_error_is($s->op(PUT => "/workspaces/$w", {plan => 3}),
                          400, 'VALIDATION_ERROR', 'plan not a string');
    is($body->{field}, 'plan', 'plan not a string: names the field');

    $body = json_error_is($s->op(PUT => "/workspaces/$w",
                                 {plan => 'mini', subscriptionStatus => 'ok'}),
                          400, 'VALIDATION_ERROR', 'invalid status');
    is($body->{field}, 'subscriptionStatus', 'invalid status: field');

    $body = json_error_is($s->op(PUT => "/workspaces/$w",
                                 {plan => 'mini', stripeCustomerId => 'x_1'}),
                          400, 'VALIDATION_ERROR', 'invalid customer id');
    is($body->{field}, 'stripeCustomerId', 'invalid customer id: field');
    # what every Stripe call takes as an id: no '-' (a typo stored would
    # leave confirms "no card" and reconciliation entries no_customer)
    $body = json_error_is($s->op(PUT => "/workspaces/$w",
                                 {plan => 'mini',
                                  stripeCustomerId => 'cus_a-1'}),
                          400, 'VALIDATION_ERROR', 'a customer id with -');
    is($body->{field}, 'stripeCustomerId', 'a customer id with -: field');

    for my $bad ('bad.id', 'a' x 65, 'sp%20ace', 'caf%C3%A9') {
        json_error_is($s->op(PUT => "/workspaces/$bad", {plan => 'mini'}),
                      400, 'INVALID_ID', "invalid id '$bad'",
                      qr/Invalid workspace id/);
    }

    # "\u0000" is valid JSON: a field that is read refuses it as its
    # check refuses a bad value ("mini\0x" must not be stored as "mini")
    for my $f (qw(plan subscriptionStatus stripeCustomerId)) {
        $body = json_error_is($s->op(PUT => "/workspaces/$w",
                                     {plan => 'mini', $f => "mini\0x"}),
                              400, 'VALIDATION_ERROR', "a NUL in $f");
        is($body->{field}, $f, "a NUL in $f: names the field");
    }

    is_deeply(redis_dump($r), $before, 'refused calls wrote nothing');

    $body = answer_is($s->op(PUT => "/workspaces/$w",
                             {plan => 'growth', subscriptionStatus => 'active',
                              stripeCustomerId => 'cus_Test123',
                              unknownField => 1, note => "a\0b"}),
                      200, 'create');
    is($body->{id}, $w, 'create: id');
    is($body->{plan}, 'growth', 'create: plan');
    is($body->{subscriptionStatus}, 'active', 'create: status');
    is($body->{stripeCustomerId}, 'cus_Test123', 'create: customer');
    like($body->{createdAt}, $ISO, 'create: createdAt');
    is($body->{updatedAt}, $body->{createdAt}, 'create: updatedAt');
    is_deeply({$r->hgetall("lg:{ws:$w}")},
              {plan => 'growth', subscriptionStatus => 'active',
               stripeCustomerId => 'cus_Test123',
               createdAt => $body->{createdAt},
               updatedAt => $body->{updatedAt}},
              'create: the hash of data-model.md');

    select undef, undef, undef, 0.01;
    my $up = answer_is($s->op(PUT => "/workspaces/$w",
                              {subscriptionStatus => 'past_due',
                               stripeCustomerId => undef}),
                       200, 'update');
    is($up->{plan}, 'growth', 'update: plan kept');
    is($up->{subscriptionStatus}, 'past_due', 'update: status');
    is($up->{stripeCustomerId}, undef, 'update: null removes the customer');
    is($up->{createdAt}, $body->{createdAt}, 'update: createdAt kept');
    cmp_ok($up->{updatedAt}, 'gt', $body->{createdAt}, 'update: updatedAt');
    ok(!$r->hexists("lg:{ws:$w}", 'stripeCustomerId'),
       'update: field removed in Redis');

    answer_is($s->op(PUT => "/workspaces/$w", undef), 200,
              'update with no body');

    $body = answer_is($s->op(GET => "/workspaces/$w"), 200, 'get');
    is($body->{plan}, 'growth', 'get: plan');
    is($body->{subscriptionStatus}, 'past_due', 'get: status');

    json_error_is($s->op(GET => '/workspaces/org_nobody'), 404, 'NOT_FOUND',
                  'get unknown', qr/Workspace not found/);
    json_error_is($s->op(GET => '/workspaces/no.pe'), 400, 'INVALID_ID',
                  'get invalid id');
};

subtest 'workspace API keys' => sub {
    my $w = 'org_keys';
    answer_is($s->op(PUT => "/workspaces/$w", {plan => 'starter'}), 200,
              'workspace');

    my $before = redis_dump($r);
    json_error_is($s->op(POST => '/workspaces/org_ghost/keys'), 404,
                  'NOT_FOUND', 'key for an unknown workspace');
    json_error_is($s->op(POST => '/workspaces/bad!id/keys'), 400,
                  'INVALID_ID', 'key for an invalid id');
    is_deeply(redis_dump($r), $before, 'nothing written');

    my $k1 = answer_is($s->op(POST => "/workspaces/$w/keys"), 201, 'issue');
    like($k1->{keyId}, qr/^key_[0-9a-f]{16}$/, 'issue: key id');
    like($k1->{key}, qr/^tuco_[A-Za-z0-9]{40}$/, 'issue: key');
    push @secrets, $k1->{key};

    is($r->get('lg:apikey:' . sha256_hex($k1->{key})), $w,
       'lg:apikey:<digest> names the workspace');
    is($r->hget("lg:{ws:$w}:keys", $k1->{keyId}), sha256_hex($k1->{key}),
       'the key id maps to the digest');
    ok(!grep({ index($_, $k1->{key}) >= 0 } redis_values($r)),
       'the key itself is nowhere in Redis');

    my $k2 = answer_is($s->op(POST => "/workspaces/$w/keys", {}), 201,
                       'issue a second');
    push @secrets, $k2->{key};
    isnt($k2->{key}, $k1->{key}, 'keys differ');

    my $list = answer_is($s->op(GET => "/workspaces/$w/keys"), 200, 'list');
    is_deeply($list, {keys => [map { {keyId => $_} }
                               sort $k1->{keyId}, $k2->{keyId}]},
              'list: key ids only, sorted');
    json_error_is($s->op(GET => '/workspaces/org_ghost/keys'), 404,
                  'NOT_FOUND', 'list of an unknown workspace');

    # the Lines API resolves the key
    my $tx = $s->ua->get($s->url('/api/lines/by-user')
                         => {Authorization => "Bearer $k1->{key}"});
    is($tx->res->code, 200, 'the key authenticates on the Lines API');

    json_error_is($s->op(DELETE => "/workspaces/$w/keys/key_nothex"), 400,
                  'INVALID_ID', 'revoke an invalid key id');
    json_error_is($s->op(DELETE => "/workspaces/$w/keys/key_0000000000000000"),
                  404, 'NOT_FOUND', 'revoke an unknown key id');

    my $body = answer_is($s->op(DELETE => "/workspaces/$w/keys/$k1->{keyId}"),
                         200, 'revoke');
    is_deeply($body, {revoked => Mojo::JSON::true}, 'revoke: body');
    ok(!$r->exists('lg:apikey:' . sha256_hex($k1->{key})),
       'revoke: the digest lookup is gone at once');
    ok(!$r->hexists("lg:{ws:$w}:keys", $k1->{keyId}), 'revoke: unlisted');
    ok($r->exists('lg:apikey:' . sha256_hex($k2->{key})),
       'revoke: the other key stays');

    select undef, undef, undef, 1.1;    # any per-worker cache expires
    $tx = $s->ua->get($s->url('/api/lines/by-user')
                      => {Authorization => "Bearer $k1->{key}"});
    is($tx->res->code, 401, 'a revoked key is refused');

    json_error_is($s->op(DELETE => "/workspaces/$w/keys/$k1->{keyId}"), 404,
                  'NOT_FOUND', 'revoke twice');
    is_deeply(answer_is($s->op(GET => "/workspaces/$w/keys"), 200, 'list'),
              {keys => [{keyId => $k2->{keyId}}]}, 'list after revoke');
};

subtest 'accounts' => sub {
    my $a = 'acct_demo-1';
    my $before = redis_dump($r);

    my $body = json_error_is($s->op(PUT => "/accounts/$a",
                                    {stripeCustomerId => 'cus_a'}),
                             400, 'VALIDATION_ERROR', 'create without plan');
    is($body->{field}, 'plan', 'names plan');

    $body = json_error_is($s->op(PUT => "/accounts/$a",
                                 {plan => 'Inbound Only'}),
                          400, 'VALIDATION_ERROR', 'invalid plan');
    is($body->{field}, 'plan', 'invalid plan: names plan');

    for my $bad (-1, '3', 1.5, 1_000_001) {
        $body = json_error_is($s->op(PUT => "/accounts/$a",
                                     {plan => 'inbound_only',
                                      api_provision_daily => $bad}),
                              400, 'VALIDATION_ERROR', "daily limit $bad");
        is($body->{field}, 'api_provision_daily', "daily limit $bad: field");
    }

    $body = json_error_is($s->op(PUT => "/accounts/$a",
                                 {plan => 'inbound_only',
                                  api_provision_monthly => 'ten'}),
                          400, 'VALIDATION_ERROR', 'monthly limit string');
    is($body->{field}, 'api_provision_monthly', 'monthly: field');

    json_error_is($s->op(PUT => '/accounts/a%20b', {plan => 'inbound_only'}),
                  400, 'INVALID_ID', 'invalid account id',
                  qr/Invalid account id/);
    is_deeply(redis_dump($r), $before, 'refused calls wrote nothing');

    $body = answer_is($s->op(PUT => "/accounts/$a",
                             {plan => 'inbound_only',
                              stripeCustomerId => 'cus_agent',
                              api_provision_daily => 5}),
                      200, 'create');
    is($body->{id}, $a, 'id');
    is($body->{plan}, 'inbound_only', 'plan');
    is($body->{stripeCustomerId}, 'cus_agent', 'customer');
    is($body->{api_provision_daily}, 5, 'daily override');
    is($body->{api_provision_monthly}, undef, 'no monthly override');
    is_deeply($body->{limits}, {daily => 5, monthly => 10},
              'limits that apply');
    is($body->{key_id}, undef, 'no credentials yet');
    like($body->{createdAt}, $ISO, 'createdAt');
    is($r->hget("lg:{acct:$a}", 'daily_limit'), 5,
       'daily_limit in the hash of data-model.md');
    is($r->hget("lg:{acct:$a}", 'plan'), 'inbound_only', 'plan in Redis');

    $body = answer_is($s->op(PUT => "/accounts/$a",
                             {api_provision_daily => undef,
                              api_provision_monthly => 0}),
                      200, 'update');
    is($body->{api_provision_daily}, undef, 'null removes the override');
    is($body->{api_provision_monthly}, 0, 'monthly 0');
    is_deeply($body->{limits}, {daily => 3, monthly => 0}, 'limits');
    ok(!$r->hexists("lg:{acct:$a}", 'daily_limit'), 'daily_limit removed');

    $body = answer_is($s->op(GET => "/accounts/$a"), 200, 'get');
    is($body->{plan}, 'inbound_only', 'get: plan');
    json_error_is($s->op(GET => '/accounts/acct_none'), 404, 'NOT_FOUND',
                  'get unknown', qr/Account not found/);
};

subtest 'account credentials' => sub {
    my $a = 'acct_creds';

    my $before = redis_dump($r);
    json_error_is($s->op(POST => "/accounts/$a/credentials"), 404,
                  'NOT_FOUND', 'unknown account');
    is_deeply(redis_dump($r), $before, 'nothing written');

    answer_is($s->op(PUT => "/accounts/$a", {plan => 'inbound_only'}), 200,
              'account');

    my $c1 = answer_is($s->op(POST => "/accounts/$a/credentials"), 201,
                       'issue');
    like($c1->{key_id}, qr/^sbk_[0-9a-f]{24}$/, 'key id');
    like($c1->{secret}, qr/^sbs_[A-Za-z0-9]{40}$/, 'secret');
    push @secrets, $c1->{secret};

    is_deeply({$r->hgetall("lg:sbkey:$c1->{key_id}")},
              {account => $a, secret_sha256 => sha256_hex($c1->{secret})},
              'lg:sbkey:<id> holds the account and the digest');
    is($r->hget("lg:{acct:$a}", 'key_id'), $c1->{key_id},
       'the account knows its key id');

    # every worker learns the first pair (its cache), then a rotation
    # through this API must refuse it at once
    my @warm = map {
        $s->ua->get($s->url('/accounts/limits')
                    => {'sb-api-key-id' => $c1->{key_id},
                        'sb-api-secret-key' => $c1->{secret}})->res->code
    } 1 .. 6;
    my $c2 = answer_is($s->op(POST => "/accounts/$a/credentials"), 201,
                       'rotate');
    push @secrets, $c2->{secret};
    isnt($c2->{key_id}, $c1->{key_id}, 'a new key id');
    # the old lookup goes by a durable write sent after the answer (the
    # account's key_id refuses the old key already): gone soon, not at once
    ok(eventually(sub { !$r->exists("lg:sbkey:$c1->{key_id}") }, 5),
       'the old key id is gone');
    ok($r->exists("lg:sbkey:$c2->{key_id}"), 'the new one works');
    is(answer_is($s->op(GET => "/accounts/$a"), 200, 'get')->{key_id},
       $c2->{key_id}, 'the account shows the new key id');

    my $tx = $s->ua->get($s->url('/accounts/limits')
                         => {'sb-api-key-id' => $c1->{key_id},
                             'sb-api-secret-key' => $c1->{secret}});
    is($tx->res->code, 401, 'the old credentials are refused');
    $tx = $s->ua->get($s->url('/accounts/limits')
                      => {'sb-api-key-id' => $c2->{key_id},
                          'sb-api-secret-key' => $c2->{secret}});
    is($tx->res->code, 200, 'the new credentials work');

    ok(!grep({ index($_, $c2->{secret}) >= 0 } redis_values($r)),
       'the secret itself is nowhere in Redis');
};

# A rotation answered 503 after its first step ran (its reply lost: Redis
# paused past linegate_redis_command_timeout, then running what it held)
# leaves the previous key id's lookup behind: the account refuses that
# key id, so the lookup is garbage, and the next rotation deletes it too
subtest 'a rotation whose reply was lost: the next one cleans up' => sub {
    my $a = 'acct_lost_reply';
    answer_is($s->op(PUT => "/accounts/$a", {plan => 'inbound_only'}), 200,
              'account');
    my $c1 = answer_is($s->op(POST => "/accounts/$a/credentials"), 201,
                       'issue');
    push @secrets, $c1->{secret};

    # past the 500ms command timeout, well within the 2s keepalive: a
    # PING unanswered for an interval drops the connection, and Redis
    # never runs what a closed connection left queued (a 1500ms pause
    # met that under load)
    $r->client('PAUSE', 900);      # every master, on a cluster
    json_error_is($s->op(POST => "/accounts/$a/credentials"), 503,
                  'STORE_UNAVAILABLE', 'rotation timed out');
    ok(eventually(sub { $r->hget("lg:{acct:$a}", 'key_id') ne $c1->{key_id} },
                  10), 'Redis ran the rotation\'s first step after all');
    my $lost = $r->hget("lg:{acct:$a}", 'key_id');
    ok(!$r->exists("lg:sbkey:$lost"), 'its lookup was never written');
    ok($r->exists("lg:sbkey:$c1->{key_id}"),
       'the previous lookup is left (refused: not the key_id)');

    my $c3 = answer_is($s->op(POST => "/accounts/$a/credentials"), 201,
                       'rotate again');
    push @secrets, $c3->{secret};
    ok(eventually(sub { !$r->exists("lg:sbkey:$c1->{key_id}") }, 5),
       'the lookup left behind is deleted by the next rotation');
    ok($r->exists("lg:sbkey:$c3->{key_id}"), 'the new lookup is there');
    is($r->hget("lg:{acct:$a}", 'key_id'), $c3->{key_id}, 'and named');
};

# A revocation answered 503 after its script ran (its reply lost: Redis
# holding writes past linegate_redis_command_timeout, then running them)
# used to leave the key's lookup lg:apikey:<digest> behind for good: the
# entry was gone (the key refused: lr_gate checks it), a retry was a 404,
# and nothing knew the digest any more. The digest is now read first, so
# a lost reply still deletes the lookup (a durable write)
subtest 'a revocation whose reply was lost: the lookup goes all the same'
    => sub {
    my $w = 'org_lost_revoke';
    answer_is($s->op(PUT => "/workspaces/$w", {plan => 'starter'}), 200,
              'workspace');
    my $k = answer_is($s->op(POST => "/workspaces/$w/keys"), 201, 'issue');
    push @secrets, $k->{key};
    my $lookup = 'lg:apikey:' . sha256_hex($k->{key});
    ok($r->exists($lookup), 'its lookup');

    # past the 500ms command timeout, within the keepalive's 1s
    $r->client('PAUSE', 800, 'WRITE');      # reads go on, scripts wait
    json_error_is($s->op(DELETE => "/workspaces/$w/keys/$k->{keyId}"), 503,
                  'STORE_UNAVAILABLE', 'revocation timed out');
    ok(eventually(sub { !$r->hexists("lg:{ws:$w}:keys", $k->{keyId}) }, 10),
       'Redis ran the revocation after all');
    ok(eventually(sub { !$r->exists($lookup) }, 10),
       'the lookup is deleted too');

    select undef, undef, undef, 1.1;    # any per-worker cache expires
    my $tx = $s->ua->get($s->url('/api/lines/by-user')
                         => {Authorization => "Bearer $k->{key}"});
    is($tx->res->code, 401, 'the key is refused');
    json_error_is($s->op(DELETE => "/workspaces/$w/keys/$k->{keyId}"), 404,
                  'NOT_FOUND', 'revoked: a retry finds nothing');
};

subtest 'inventory' => sub {
    my $body = answer_is($s->op(GET => '/inventory'), 200, 'empty list');
    is_deeply($body, {count => 0, numbers => [], cursor => undef}, 'empty');

    $body = answer_is($s->op(POST => '/inventory',
                             {numbers => ['+14155550102', '+14155550100',
                                          '+4930123456', '+14155550100']}),
                      200, 'add');
    is_deeply($body, {added => 3, total => 3, held => 0},
              'add: duplicates count once');

    $body = answer_is($s->op(POST => '/inventory',
                             {numbers => ['+14155550100', '+123456789012345']}),
                      200, 'add again');
    is_deeply($body, {added => 1, total => 4, held => 0},
              'add again: counts');

    my $before = redis_dump($r);
    for my $case (
        [{numbers => []}, 'empty array'],
        [{numbers => '+14155550100'}, 'not an array'],
        [{}, 'missing'],
        [{numbers => ['+14155550199', '14155550100']}, 'no plus',
         qr/numbers\[1\]/],
        [{numbers => ['+1234567']}, '7 digits'],
        [{numbers => ['+1234567890123456']}, '16 digits'],
        [{numbers => ['+1415555O100']}, 'a letter'],
        [{numbers => ['+1415555,0100']}, 'a comma'],
        [{numbers => [14155550100]}, 'a number, not a string'],
        # no country code starts with 0: a typo, which a purchase would
        # be sold and charged for
        [{numbers => ['+14155550198', '+04155550100']}, 'a leading 0',
         qr/numbers\[1\]/],
        [{numbers => ['+00000000000']}, 'zeros'],
        [{numbers => [map { sprintf '+141555%09d', $_ } 1 .. 1001]},
         '1001 numbers'],
    ) {
        my ($json, $name, $re) = @$case;
        my $b = json_error_is($s->op(POST => '/inventory', $json), 400,
                              'VALIDATION_ERROR', "refused: $name", $re);
        is($b->{field}, 'numbers', "refused: $name: field");
    }
    is_deeply(redis_dump($r), $before, 'refused calls wrote nothing');

    $body = answer_is($s->op(POST => '/inventory',
                             {numbers => [map { sprintf '+141557%09d', $_ }
                                          1 .. 1000]}),
                      200, '1000 numbers in one call');
    is_deeply($body, {added => 1000, total => 1004, held => 0},
              '1000: counts');
    $r->srem('lg:{fleet}:inventory', map { sprintf '+141557%09d', $_ } 1 .. 1000);

    $body = answer_is($s->op(GET => '/inventory'), 200, 'list');
    is_deeply($body, {count => 4,
                      numbers => ['+123456789012345', '+14155550100',
                                  '+14155550102', '+4930123456'],
                      cursor => undef},
              'list: sorted, one page');

    $body = answer_is($s->op(DELETE => '/inventory/%2B14155550100'), 200,
                      'remove, %2B');
    is_deeply($body, {number => '+14155550100',
                      removed => Mojo::JSON::true}, 'remove: body');
    answer_is($s->op(DELETE => '/inventory/+14155550102'), 200,
              'remove, literal +');
    json_error_is($s->op(DELETE => '/inventory/+14155550102'), 404,
                  'NOT_FOUND', 'remove twice');
    json_error_is($s->op(DELETE => '/inventory/14155550102'), 400,
                  'INVALID_ID', 'remove an invalid number');
    # one loaded before its check refused a leading 0 can still go
    $r->sadd('lg:{fleet}:inventory', '+04155550100');
    answer_is($s->op(DELETE => '/inventory/+04155550100'), 200,
              'remove a number with a leading 0 loaded before');
    is_deeply([sort $r->smembers('lg:{fleet}:inventory')],
              ['+123456789012345', '+4930123456'], 'what is left');
};

# bounded work per request: a Lines call whose key no worker caches walks
# the workspace's keys (include/lr_gate.lua), so a workspace holds at most
# NGX_HTTP_LINEGATE_WS_KEYS_MAX (100)
subtest 'at most 100 API keys a workspace' => sub {
    my $w = 'org_manykeys';
    answer_is($s->op(PUT => "/workspaces/$w", {plan => 'starter'}), 200,
              'workspace');
    my @ids;
    for my $i (1 .. 100) {
        my $tx = $s->op(POST => "/workspaces/$w/keys");
        is($tx->res->code, 201, "key $i issued") or last;
        push @ids, $tx->res->json->{keyId};
    }
    is($r->hlen("lg:{ws:$w}:keys"), 100, '100 keys listed');

    my $before = redis_dump($r);
    my $b = json_error_is($s->op(POST => "/workspaces/$w/keys"), 409,
                          'KEY_LIMIT_REACHED', 'the 101st refused',
                          qr/revoke one/);
    ok(!exists $b->{key}, 'no key shown');
    is_deeply(redis_dump($r), $before, 'the refusal wrote nothing');

    answer_is($s->op(DELETE => "/workspaces/$w/keys/$ids[0]"), 200,
              'revoke one');
    answer_is($s->op(POST => "/workspaces/$w/keys"), 201,
              'then one more may be issued');
    is($r->hlen("lg:{ws:$w}:keys"), 100, 'still 100');
};

# bounded work per request: a large inventory is listed a page at a time
# (SSCAN), never sorted or answered whole
subtest 'inventory pages' => sub {
    my @all = map { sprintf '+141558%06d', $_ } 1 .. 2500;
    $r->sadd('lg:{fleet}:inventory', @all);
    my $total = $r->scard('lg:{fleet}:inventory');
    cmp_ok($total, '>=', 2500, "$total numbers in the inventory");
    my $before = redis_dump($r);

    my $walk = sub {
        my ($count) = @_;
        my ($cursor, $pages, $largest, %seen) = ('0', 0, 0);
        do {
            my $q = "/inventory?cursor=$cursor"
                  . (defined $count ? "&count=$count" : '');
            my $body = answer_is($s->op(GET => $q), 200, "GET $q");
            is($body->{count}, $total, 'count: the whole inventory')
                if $pages == 0;
            my @n = @{ $body->{numbers} };
            is_deeply(\@n, [sort @n], 'a page is sorted') if $pages == 0;
            $largest = @n if @n > $largest;
            $seen{$_}++ for @n;
            $cursor = $body->{cursor};
            $pages++;
        } while (defined $cursor && $pages < 10_000);
        return (\%seen, $pages, $largest);
    };

    my ($seen, $pages, $largest) = $walk->(undef);
    cmp_ok($pages, '>=', 3, "default pages of 1000: $pages pages");
    cmp_ok($largest, '<=', 1100, "no page much past 1000 ($largest)");
    is(scalar(grep { !$seen->{$_} } @all), 0, 'every number listed');

    ($seen, $pages, $largest) = $walk->(100);
    cmp_ok($pages, '>=', 25, "count=100: $pages pages");
    cmp_ok($largest, '<=', 150, "count=100: largest page $largest");
    is(scalar(grep { !$seen->{$_} } @all), 0, 'count=100: every number');

    for my $q ('count=0', 'count=1001', 'count=x', 'cursor=x',
               'cursor=-1', 'cursor=' . ('9' x 20), 'cursor=')
    {
        my $b = json_error_is($s->op(GET => "/inventory?$q"), 400,
                              'VALIDATION_ERROR', "refused: $q");
        is($b->{field}, ($q =~ /^(\w+)/)[0], "refused: $q: field");
    }
    is_deeply(redis_dump($r), $before, 'listing wrote nothing');
    $r->srem('lg:{fleet}:inventory', @all);
};

# numbers that are no E.164 number, set aside by a confirm's claim or a
# preview (pv_claim, pv_stock: lg:{fleet}:inventory:quarantine): listed a
# page at a time, released back to the inventory (as they are, or
# corrected) unless handed out or there already, or dropped
subtest 'inventory quarantine' => sub {
    my $Q = 'lg:{fleet}:inventory:quarantine';
    my $INV = 'lg:{fleet}:inventory';
    $r->del($Q);
    my $body = answer_is($s->op(GET => '/inventory/quarantine'), 200,
                         'empty quarantine');
    is_deeply($body, {count => 0, numbers => [], cursor => undef}, 'empty');

    my @bad = ('+04155550101', '+04155550102', '+0415555', "bad \x{e9}",
               '+4930123457');
    $r->sadd($Q, map { Encode::encode_utf8($_) } @bad);
    $body = answer_is($s->op(GET => '/inventory/quarantine'), 200, 'list');
    is_deeply($body, {count => 5, numbers => [sort @bad], cursor => undef},
              'list: sorted, one page');

    # a page at a time, as the inventory's
    my @many = map { sprintf '+0%010d', $_ } 1 .. 1500;
    $r->sadd($Q, @many);
    my ($cursor, $pages, %seen) = ('0', 0);
    do {
        $body = answer_is($s->op(GET =>
                    "/inventory/quarantine?count=500&cursor=$cursor"), 200,
                    "page $pages");
        is($body->{count}, 1505, 'count: the whole quarantine')
            if $pages == 0;
        cmp_ok(scalar @{ $body->{numbers} }, '<=', 600, 'a bounded page')
            if $pages == 0;
        $seen{$_}++ for @{ $body->{numbers} };
        $cursor = $body->{cursor};
        $pages++;
    } while (defined $cursor && $pages < 1000);
    cmp_ok($pages, '>=', 3, "$pages pages");
    is(scalar(grep { !$seen{$_} } @many, @bad), 0, 'every entry listed');
    $r->srem($Q, @many);

    my $before = redis_dump($r);
    for my $q ('count=0', 'count=1001', 'cursor=x', 'cursor=') {
        my $b = json_error_is($s->op(GET => "/inventory/quarantine?$q"), 400,
                              'VALIDATION_ERROR', "list refused: $q");
        is($b->{field}, ($q =~ /^(\w+)/)[0], "list refused: $q: field");
    }

    # bad input: 400, the field named, nothing written
    my $R = '/inventory/quarantine/release';
    for my $case (
        [$R, {}, 'number', 'no number'],
        [$R, {number => ''}, 'number', 'an empty number'],
        [$R, {number => 4155550101}, 'number', 'a JSON number'],
        [$R, {number => 'x' x 257}, 'number', '257 bytes'],
        [$R, {number => "+0415\x{0}5550101"}, 'number', 'a NUL'],
        [$R, {number => '+04155550101'}, 'as', 'no E.164 number, no as'],
        [$R, {number => '+04155550101', as => '+04155550101'}, 'as',
         'as: a leading 0'],
        [$R, {number => '+04155550101', as => '14155550101'}, 'as',
         'as: no plus'],
        [$R, {number => '+04155550101', as => 14155550101}, 'as',
         'as: a JSON number'],
        [$R, {number => '+04155550101', as => undef}, 'as', 'as: null'],
        ['/inventory/quarantine/drop', {}, 'number', 'drop: no number'],
        ['/inventory/quarantine/drop', {number => ['+0415555']}, 'number',
         'drop: an array'],
    ) {
        my ($path, $json, $field, $name) = @$case;
        my $b = json_error_is($s->op(POST => $path, $json), 400,
                              'VALIDATION_ERROR', "refused: $name");
        is($b->{field}, $field, "refused: $name: field");
    }
    json_error_is($s->op(POST => $R, \'{"number":'), 400,
                  'VALIDATION_ERROR', 'refused: not JSON');
    json_error_is($s->op(GET => $R), 405, undef, 'release is a POST');
    json_error_is($s->op(POST => $R, {number => '+04155550199',
                                      as => '+14155550199'}),
                  404, 'NOT_FOUND', 'not in the quarantine',
                  qr/^Number not in the quarantine$/);
    json_error_is($s->op(POST => '/inventory/quarantine/drop',
                         {number => '+04155550199'}),
                  404, 'NOT_FOUND', 'drop: not in the quarantine');

    # handed out (a purchase's claim, a line, a reconcile entry): a second
    # purchase would be sold it
    $r->sadd('lg:{fleet}:held', '+14155550102');
    json_error_is($s->op(POST => $R, {number => '+04155550102',
                                      as => '+14155550102'}),
                  409, 'NUMBER_HELD', 'as: handed out', qr/handed out/);
    $r->srem('lg:{fleet}:held', '+14155550102');
    # already in the inventory: drop the entry instead
    $r->sadd($INV, '+14155550102');
    json_error_is($s->op(POST => $R, {number => '+04155550102',
                                      as => '+14155550102'}),
                  409, 'NUMBER_IN_INVENTORY', 'as: in the inventory',
                  qr/drop the entry/);
    $r->srem($INV, '+14155550102');
    is_deeply(redis_dump($r), $before, 'refused calls wrote nothing');

    # released corrected: out of the quarantine, into the inventory
    my $inv = $r->scard($INV);
    $body = answer_is($s->op(POST => $R, {number => '+04155550101',
                                          as => '+14155550101'}),
                      200, 'release, corrected');
    is_deeply($body, {number => '+04155550101', released => '+14155550101',
                      total => $inv + 1}, 'release: body');
    ok(!$r->sismember($Q, '+04155550101'), 'the entry left the quarantine');
    ok($r->sismember($INV, '+14155550101'), 'the number is in the inventory');
    ok(!$r->sismember($INV, '+04155550101'), 'the entry is not');
    json_error_is($s->op(POST => $R, {number => '+04155550101',
                                      as => '+14155550101'}),
                  404, 'NOT_FOUND', 'released twice');

    # as it is: an entry that is an E.164 number (written by hand there)
    $body = answer_is($s->op(POST => $R, {number => '+4930123457'}), 200,
                      'release as it is');
    is($body->{released}, '+4930123457', 'released as it is');
    ok($r->sismember($INV, '+4930123457'), 'in the inventory');

    # any entry can be named: JSON escapes, not UTF-8 bytes
    $body = answer_is($s->op(POST => $R, {number => "bad \x{e9}",
                                          as => '+14155550103'}),
                      200, 'release a text entry, corrected');
    is($body->{number}, "bad \x{e9}", 'the entry as it was');

    # dropped
    $body = answer_is($s->op(POST => '/inventory/quarantine/drop',
                             {number => '+0415555'}), 200, 'drop');
    is_deeply($body, {number => '+0415555', dropped => Mojo::JSON::true},
              'drop: body');
    ok(!$r->sismember($Q, '+0415555'), 'dropped from the quarantine');
    ok(!$r->sismember($INV, '+0415555'), 'and not in the inventory');
    is_deeply([$r->smembers($Q)], ['+04155550102'], 'what is left');

    my $released = 'operator: a quarantined number \(12 bytes\) released '
                 . 'to the inventory as "\+14155550101", \d+ in it';
    like($s->error_log, qr/$released/, 'the release logged');
    like($s->error_log, qr/operator: a quarantined number \(8 bytes\) dropped/,
         'the drop logged');
    $r->del($Q);
    $r->srem($INV, '+14155550101', '+4930123457', '+14155550103');
};

subtest 'line transitions' => sub {
    my $w = 'org_lines';

    for my $bad ('xyz', '0123456789ABCDEF01234567', '0' x 23, '0' x 25) {
        json_error_is($s->op(POST => "/lines/$bad/active", {}), 400,
                      'INVALID_ID', "invalid id $bad", qr/Invalid line id/);
    }
    json_error_is($s->op(POST => '/lines/' . line_id() . '/active', {}), 404,
                  'NOT_FOUND', 'unknown id', qr/Line not found/);

    # a purchased phone line without a number needs one
    my $id = seed_line($w);
    my $body = json_error_is($s->op(POST => "/lines/$id/active", {}), 400,
                             'VALIDATION_ERROR', 'phone required');
    is($body->{field}, 'phone', 'phone required: field');
    $body = json_error_is($s->op(POST => "/lines/$id/active",
                                 {phone => '4155550100'}),
                          400, 'VALIDATION_ERROR', 'phone not E.164');
    is($body->{field}, 'phone', 'phone not E.164: field');
    $body = json_error_is($s->op(POST => "/lines/$id/active",
                                 {phone => '+04155550100'}),
                          400, 'VALIDATION_ERROR', 'phone with a leading 0');
    is($body->{field}, 'phone', 'phone with a leading 0: field');
    is($r->hget("lg:{ws:$w}:lr:$id", 'provisioningStatus'), 'provisioning',
       'still provisioning');

    $body = answer_is($s->op(POST => "/lines/$id/active",
                             {phone => '+14155550123'}),
                      200, 'provisioning -> active');
    is($body->{id}, $id, 'id');
    is($body->{workspaceId}, $w, 'workspace');
    is($body->{provisioningStatus}, 'active', 'status');
    is($body->{phone}, '+14155550123', 'phone');
    like($body->{updatedAt}, $ISO, 'updatedAt');
    is_deeply([$r->hmget("lg:{ws:$w}:lr:$id", qw(provisioningStatus phone
                                                  updatedAt))],
              ['active', '+14155550123', $body->{updatedAt}],
              'written in Redis');

    $body = json_error_is($s->op(POST => "/lines/$id/failed",
                                 {reason => 'too late'}),
                          409, 'INVALID_TRANSITION', 'active -> failed');
    is($body->{error}, 'Line is active', '409 names the status');
    json_error_is($s->op(POST => "/lines/$id/active",
                         {phone => '+14155550123'}),
                  409, 'INVALID_TRANSITION', 'active -> active');

    # email and BYON lines need no number
    my $email = seed_line($w, channelType => 'email',
                          email => 'ada@example.com');
    json_error_is($s->op(POST => "/lines/$email/active",
                         {phone => '+14155550123'}),
                  400, 'VALIDATION_ERROR', 'phone on an email line');
    $body = answer_is($s->op(POST => "/lines/$email/active"), 200,
                      'email line -> active');
    is($body->{phone}, undef, 'email line: no phone');
    is($body->{email}, 'ada@example.com', 'email line: email');

    my $byon = seed_line($w, lineType => 'byon', phone => '+14155550999');
    $body = answer_is($s->op(POST => "/lines/$byon/active", {}), 200,
                      'BYON line -> active');
    is($body->{phone}, '+14155550999', 'BYON: its own number');

    # failed
    my $f = seed_line($w);
    for my $reason (undef, '', '   ', 7, 'x' x 501) {
        my $b = json_error_is($s->op(POST => "/lines/$f/failed",
                                     {reason => $reason}),
                              400, 'VALIDATION_ERROR',
                              'reason ' . ($reason // 'null'));
        is($b->{field}, 'reason', 'reason: field');
    }
    # one line of text: a CR or LF alone was taken for a reason (only
    # spaces and tabs are trimmed), and a control character was stored as
    # the line's failureReason
    my $before = redis_dump($r);
    for my $reason ("\n", "\r\n", " \n ", "carrier\nrefused", "a\x01b",
                    "a\x7fb", "a\x1bb") {
        (my $shown = $reason) =~ s/([^ -~])/sprintf '\\x%02x', ord $1/ge;
        my $b = json_error_is($s->op(POST => "/lines/$f/failed",
                                     {reason => $reason}),
                              400, 'VALIDATION_ERROR', "reason '$shown'");
        is($b->{field}, 'reason', "reason '$shown': field");
    }
    is_deeply(redis_dump($r), $before, 'refused reasons wrote nothing');
    $body = answer_is($s->op(POST => "/lines/$f/failed",
                             {reason => "  numéro refusé\t"}),
                      200, 'a UTF-8 reason, trimmed');
    is($body->{failureReason}, 'numéro refusé', 'UTF-8 reason kept');
    $f = seed_line($w);
    $body = answer_is($s->op(POST => "/lines/$f/failed",
                             {reason => 'carrier refused the number'}),
                      200, 'provisioning -> failed');
    is($body->{provisioningStatus}, 'failed', 'failed: status');
    is($body->{failureReason}, 'carrier refused the number', 'reason');
    is($r->hget("lg:{ws:$w}:lr:$f", 'failureReason'),
       'carrier refused the number', 'reason in Redis');
    json_error_is($s->op(POST => "/lines/$f/active",
                         {phone => '+14155550123'}),
                  409, 'INVALID_TRANSITION', 'failed -> active');

    my $wait = seed_line($w, provisioningStatus => 'awaiting_payment',
                         paymentStatus => 'unpaid');
    $body = json_error_is($s->op(POST => "/lines/$wait/active",
                                 {phone => '+14155550123'}),
                          409, 'INVALID_TRANSITION', 'awaiting -> active');
    is($body->{error}, 'Line is awaiting_payment', '409 names the status');

    # an index entry whose request is gone
    $r->set('lg:line:' . (my $gone = line_id()), $w);
    json_error_is($s->op(POST => "/lines/$gone/failed", {reason => 'x'}),
                  404, 'NOT_FOUND', 'index without a request');
};

subtest 'health and usage' => sub {
    my $w = 'org_health';
    my $id = seed_line($w, provisioningStatus => 'active');

    my $body = answer_is($s->op(POST => "/lines/$id/health",
                                {status => 'unhealthy'}),
                         200, 'health');
    is($body->{id}, $id, 'health: id');
    is($body->{healthCheck}{status}, 'unhealthy', 'health: status');
    like($body->{healthCheck}{lastCheckedAt}, $ISO, 'health: time');
    is_deeply([$r->hmget("lg:{ws:$w}:lr:$id", qw(healthStatus
                                                  healthCheckedAt))],
              ['unhealthy', $body->{healthCheck}{lastCheckedAt}],
              'health in Redis');

    for my $bad ('sick', '', 1) {
        my $b = json_error_is($s->op(POST => "/lines/$id/health",
                                     {status => $bad}),
                              400, 'VALIDATION_ERROR', "health '$bad'");
        is($b->{field}, 'status', 'health: field');
    }
    json_error_is($s->op(POST => '/lines/' . line_id() . '/health',
                         {status => 'healthy'}),
                  404, 'NOT_FOUND', 'health of an unknown line');

    my $day = strftime('%Y-%m-%d', gmtime);
    my $key = "lg:{ws:$w}:usage:$id:$day";

    $body = answer_is($s->op(POST => "/lines/$id/usage",
                             {newConversations => 2, totalMessages => 5}),
                      200, 'usage');
    $body = answer_is($s->op(POST => "/lines/$id/usage",
                             {newConversations => 1, totalMessages => 4}),
                      200, 'usage again');
    is_deeply($body, {id => $id,
                      usage => {date => $day, newConversationsCount => 3,
                                totalMessagesCount => 9}},
              'usage: the day\'s totals');
    is_deeply({$r->hgetall($key)},
              {newConversationsCount => 3, totalMessagesCount => 9},
              'usage in Redis');
    my $ttl = $r->ttl($key);
    ok($ttl > 3 * 86400 - 10 && $ttl <= 3 * 86400, 'usage expires in 3 days');

    $body = answer_is($s->op(POST => "/lines/$id/usage",
                             {totalMessages => 1}),
                      200, 'one counter only');
    is($body->{usage}{newConversationsCount}, 3, 'the other is unchanged');

    for my $case ([{newConversations => -1}, 'newConversations'],
                  [{totalMessages => '5'}, 'totalMessages'],
                  [{totalMessages => 2.5}, 'totalMessages'],
                  [{newConversations => 1_000_001}, 'newConversations']) {
        my $b = json_error_is($s->op(POST => "/lines/$id/usage", $case->[0]),
                              400, 'VALIDATION_ERROR',
                              "usage refused: $case->[1]");
        is($b->{field}, $case->[1], 'usage refused: field');
    }
    is($r->hget($key, 'totalMessagesCount'), 10, 'refused calls add nothing');

    json_error_is($s->op(POST => '/lines/' . line_id() . '/usage',
                         {totalMessages => 1}),
                  404, 'NOT_FOUND', 'usage of an unknown line');
};

# A usage report with an Idempotency-Key (as the Lines API reads its own)
# is counted once: the script records the key in the step that adds, and
# the same key with the same body answers the first call's totals without
# adding (Idempotent-Replayed), with another body 422, nothing added
subtest 'usage with an Idempotency-Key is counted once' => sub {
    my $w = 'org_usage_idem';
    my $id = seed_line($w, provisioningStatus => 'active');
    my $day = strftime('%Y-%m-%d', gmtime);
    my $key = "lg:{ws:$w}:usage:$id:$day";
    my $report = {newConversations => 1, totalMessages => 4};
    my $first = {id => $id, usage => {date => $day, newConversationsCount => 1,
                                      totalMessagesCount => 4}};

    my $tx = $s->op(POST => "/lines/$id/usage", $report,
                    'Idempotency-Key' => 'report-1');
    is_deeply(answer_is($tx, 200, 'first'), $first, 'first: the totals');
    ok(!defined $tx->res->headers->header('Idempotent-Replayed'),
       'first: not a replay');

    # the same body in another order and spacing is the same report
    $tx = $s->op(POST => "/lines/$id/usage",
                 {totalMessages => 4, newConversations => 1},
                 'Idempotency-Key' => 'report-1');
    is_deeply(answer_is($tx, 200, 'again'), $first,
              'again: the first call\'s totals');
    is($tx->res->headers->header('Idempotent-Replayed'), 'true',
       'again: Idempotent-Replayed: true');
    is_deeply({$r->hgetall($key)},
              {newConversationsCount => 1, totalMessagesCount => 4},
              'again: nothing added');

    my $record = "lg:{ws:$w}:usageidem:$id:" . sha256_hex('report-1');
    my $ttl = $r->ttl($record);
    ok($ttl > 3 * 86400 - 10 && $ttl <= 3 * 86400,
       'the key is kept 3 days, as the counters');

    my $before = redis_dump($r);
    json_error_is($s->op(POST => "/lines/$id/usage", {totalMessages => 5},
                         'Idempotency-Key' => 'report-1'),
                  422, 'IDEMPOTENCY_KEY_MISMATCH', 'the key with another body');
    is_deeply(redis_dump($r), $before, 'another body: nothing written');

    for my $bad (['', 'empty'], ['k' x 256, '256 characters']) {
        my $b = json_error_is($s->op(POST => "/lines/$id/usage", $report,
                                     'Idempotency-Key' => $bad->[0]),
                              400, 'VALIDATION_ERROR', "key: $bad->[1]");
        is($b->{field}, 'idempotencyKey', "key: $bad->[1]: field");
    }
    json_error_is($s->op(POST => "/lines/$id/usage", $report,
                         'Idempotency-Key' => ['a', 'b']),
                  400, 'VALIDATION_ERROR', 'two keys');
    is_deeply(redis_dump($r), $before, 'refused keys: nothing written');

    is(answer_is($s->op(POST => "/lines/$id/usage", $report,
                        'Idempotency-Key' => 'report-2'),
                 200, 'another key')->{usage}{totalMessagesCount},
       8, 'another key adds');
    is(answer_is($s->op(POST => "/lines/$id/usage", $report), 200,
                 'no key')->{usage}{totalMessagesCount},
       12, 'no key adds');
    is(answer_is($s->op(POST => "/lines/$id/usage", $report), 200,
                 'no key again')->{usage}{totalMessagesCount},
       16, 'no key: each call adds');
    is($r->hget("lg:{ws:$w}:lr:$id", '_tm'), 16, 'the line\'s own counters');

    # a field null is the field absent (0, or an unknown field ignored):
    # the same report (before, a 422 IDEMPOTENCY_KEY_MISMATCH)
    $tx = $s->op(POST => "/lines/$id/usage", {%$report, lostCount => undef},
                 'Idempotency-Key' => 'report-1');
    is_deeply(answer_is($tx, 200, 'an unknown field null'), $first,
              'an unknown field null: the first call\'s totals');
    is($tx->res->headers->header('Idempotent-Replayed'), 'true',
       'an unknown field null: Idempotent-Replayed: true');
    my $totals = {id => $id, usage => {date => $day,
                                       newConversationsCount => 4,
                                       totalMessagesCount => 18}};
    is_deeply(answer_is($s->op(POST => "/lines/$id/usage",
                               {totalMessages => 2},
                               'Idempotency-Key' => 'report-n'),
                        200, 'newConversations absent'),
              $totals, 'newConversations absent: adds 0');
    $tx = $s->op(POST => "/lines/$id/usage",
                 {totalMessages => 2, newConversations => undef},
                 'Idempotency-Key' => 'report-n');
    is_deeply(answer_is($tx, 200, 'newConversations null'), $totals,
              'newConversations null: the same report, nothing added');
    is($tx->res->headers->header('Idempotent-Replayed'), 'true',
       'newConversations null: Idempotent-Replayed: true');

    json_error_is($s->op(POST => '/lines/' . line_id() . '/usage', $report,
                         'Idempotency-Key' => 'report-3'),
                  404, 'NOT_FOUND', 'an unknown line with a key');

    # the request is judged before any Redis step, as every endpoint
    # judges its own (docs/operator.md): a bad key is a 400 whatever the
    # line, and Redis is not asked (before, the line's lookup came first,
    # and an unknown line's 404)
    my $unknown = '/lines/' . line_id() . '/usage';
    for my $bad (['', 'empty'], ['k' x 256, '256 characters']) {
        my $b;
        my ($cmds) = $s->redis_traffic(sub {
            $b = json_error_is($s->op(POST => $unknown, $report,
                                      'Idempotency-Key' => $bad->[0]),
                               400, 'VALIDATION_ERROR',
                               "an unknown line, key $bad->[1]");
        });
        is($b->{field}, 'idempotencyKey',
           "an unknown line, key $bad->[1]: field");
        is_deeply([grep { /lg:line:/ } @$cmds], [],
                  "an unknown line, key $bad->[1]: its owner not read");
    }
    json_error_is($s->op(POST => $unknown,
                         {%$report, idempotencyKey => 'report-4'},
                         'Idempotency-Key' => 'report-5'),
                  400, 'VALIDATION_ERROR',
                  'an unknown line, the header and the field differ');
};

# A report answered 503 after its script ran (its reply lost: Redis
# holding writes past linegate_redis_command_timeout, then running them)
# was counted twice when the reporter sent it again. With its key, the
# retry finds the record the lost step wrote and adds nothing
subtest 'a usage report whose reply was lost, sent again with its key, '
    . 'adds once' => sub {
    my $w = 'org_usage_lost';
    my $id = seed_line($w, provisioningStatus => 'active');
    my $day = strftime('%Y-%m-%d', gmtime);
    my $key = "lg:{ws:$w}:usage:$id:$day";
    my $report = {newConversations => 2, totalMessages => 3};

    # past the 500ms command timeout, within the keepalive's 1s
    $r->client('PAUSE', 800, 'WRITE');      # reads go on, scripts wait
    json_error_is($s->op(POST => "/lines/$id/usage", $report,
                         'Idempotency-Key' => 'lost-1'),
                  503, 'STORE_UNAVAILABLE', 'the report timed out');
    ok(eventually(sub { ($r->hget($key, 'totalMessagesCount') // 0) == 3 },
                  10), 'Redis ran the report after all');

    my $tx = $s->op(POST => "/lines/$id/usage", $report,
                    'Idempotency-Key' => 'lost-1');
    is_deeply(answer_is($tx, 200, 'sent again'),
              {id => $id, usage => {date => $day, newConversationsCount => 2,
                                    totalMessagesCount => 3}},
              'sent again: the totals of the one report');
    is($tx->res->headers->header('Idempotent-Replayed'), 'true',
       'sent again: Idempotent-Replayed: true');
    is_deeply({$r->hgetall($key)},
              {newConversationsCount => 2, totalMessagesCount => 3},
              'counted once');
};

subtest 'provisioning and reconciliation streams' => sub {
    is_deeply(answer_is($s->op(GET => '/provisioning'), 200, 'empty'),
              {entries => []}, 'no entries');

    my @ids = map {
        $r->xadd('lg:provisioning', '*', workspace => 'org_a', id => "l$_",
                 channelType => 'phone', lineType => 'purchased',
                 at => '2026-01-01T00:00:00.000Z')
    } 1 .. 3;

    my $body = answer_is($s->op(GET => '/provisioning'), 200, 'entries');
    is(scalar @{ $body->{entries} }, 3, 'three entries');
    is_deeply($body->{entries}[0],
              {id => $ids[0],
               fields => {workspace => 'org_a', id => 'l1',
                          channelType => 'phone', lineType => 'purchased',
                          at => '2026-01-01T00:00:00.000Z'}},
              'an entry: id and fields');

    $body = answer_is($s->op(GET => '/provisioning?count=1'), 200, 'count');
    is_deeply([map { $_->{id} } @{ $body->{entries} }], [$ids[0]], 'count=1');

    $body = answer_is($s->op(GET => "/provisioning?after=$ids[0]&count=5"),
                      200, 'after');
    is_deeply([map { $_->{id} } @{ $body->{entries} }], [@ids[1, 2]],
              'after: the next entries');

    # each one a stream id Redis refuses (an error reply: 500 before)
    for my $q ('count=0', 'count=1001', 'count=abc', 'after=x', 'after=',
               'after=-', 'after=--', 'after=1-2-3', 'after=1-',
               'after=' . '9' x 20) {
        answer_is($s->op(GET => "/provisioning?$q"), 400, "refused: $q");
    }

    $r->xadd('lg:{fleet}:reconcile', '*', account => 'acct_a',
             subscription_id => 'sub_1', phone_number => '+14155550100',
             reason => 'store unavailable', at => '2026-01-01T00:00:00.000Z');
    $body = answer_is($s->op(GET => '/reconciliation'), 200, 'reconcile');
    is($body->{entries}[0]{fields}{subscription_id}, 'sub_1',
       'reconcile: the entry');
};

subtest 'no credential in the logs or in Redis' => sub {
    ok(@secrets >= 4, 'keys and secrets were issued');
    my $logs = $s->error_log . $s->access_log;
    for my $secret (@secrets, $s->operator_token) {
        ok(index($logs, $secret) < 0,
           'not in error.log/access.log: ' . substr($secret, 0, 8) . '...');
    }
    my @values = redis_values($r);
    for my $secret (@secrets) {
        ok(!grep({ index($_, $secret) >= 0 } @values),
           'not in Redis: ' . substr($secret, 0, 8) . '...');
    }
    like($s->error_log, qr/API key "key_[0-9a-f]{16}" issued/,
         'the error log names key ids');
};

# every operator write leaves a line: a PUT says what it set (a plan or
# a subscription status given by hand shows), a number taken out of the
# inventory is named, as a load's counts are
subtest 'the error log says what each write did' => sub {
    my $log = $s->error_log;
    my %line = (
        'a workspace created: its fields' =>
            'workspace "org_2abcDEF_-9" created: plan=growth'
            . ' stripeCustomerId=cus_Test123 subscriptionStatus=active,',
        'a workspace updated: what changed, null for a removal' =>
            'workspace "org_2abcDEF_-9" updated: stripeCustomerId=null'
            . ' subscriptionStatus=past_due,',
        'an update with no field' => 'workspace "org_2abcDEF_-9" updated,',
        'an account created: its fields' =>
            'account "acct_demo-1" created: plan=inbound_only'
            . ' stripeCustomerId=cus_agent api_provision_daily=5,',
        'an account updated: its overrides' =>
            'account "acct_demo-1" updated: api_provision_daily=null'
            . ' api_provision_monthly=0,',
        'a number removed from the inventory' =>
            'number "+14155550100" removed from the inventory,',
    );
    for my $what (sort keys %line) {
        ok(index($log, "linegate: operator: $line{$what}") >= 0, $what)
            or diag "no line: $line{$what}";
    }
};

done_testing;
