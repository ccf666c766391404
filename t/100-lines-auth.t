# Lines API authentication (SPEC 2.1, 4): workspace API keys, Clerk session
# tokens (Bearer or __session cookie) and every refusal of SPEC 4, the
# order of the checks (credential before id), and ids of other workspaces.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Crypt::JWT qw(encode_jwt);
use Crypt::PK::RSA;
use MIME::Base64 qw(encode_base64url);
use Mojo::JSON qw(encode_json);
use Time::HiRes ();
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

# header buffers large enough that an oversized token reaches the module
my $s = LG::Stack->new(
    HTTP_EXTRA => 'large_client_header_buffers 4 32k;')->start;
my $l = LG::Lines->new($s);

my $w = $l->workspace('org_auth_a');
my $v = $l->workspace('org_auth_b');
my $id = $l->created($w);
my $other = $l->created($v);

my $LIST = '/api/lines/by-user';

sub bearer { return {Authorization => "Bearer $_[0]"} }

sub unauthorized {
    my ($tx, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($tx, 401, $name);
    is_deeply($b, {error => 'Unauthorized'}, "$name: body");
    is($tx->res->headers->header('WWW-Authenticate'), 'Bearer',
       "$name: the Bearer challenge (RFC 9110 11.6.1)");
    ok(!defined $tx->res->headers->header('RateLimit'),
       "$name: no RateLimit (no workspace is known)");
}

subtest 'a workspace API key' => sub {
    my $b = $l->answer($l->list($w), 200, 'by-user with the key');
    is(scalar @{ $b->{lines} }, 1, 'its one line');
    is($b->{lines}[0]{workspaceId}, 'org_auth_a', 'of its workspace');

    $b = $l->answer($l->get($w, $id), 200, 'GET with the key');
    is($b->{line}{_id}, $id, 'the request');
};

subtest 'API key refusals: 401 {"error":"Unauthorized"}' => sub {
    unauthorized($l->req(undef, GET => $LIST), 'no Authorization');
    unauthorized($l->req(bearer('tuco_' . ('x' x 40)), GET => $LIST),
                 'unknown key');
    unauthorized($l->req({Authorization => "Basic $w->{key}"},
                         GET => $LIST), 'not Bearer');
    unauthorized($l->req(bearer('tuco_short'), GET => $LIST),
                 'too short to be a key (taken as a bad token)');
    unauthorized($l->req(bearer($w->{key} . '!'), GET => $LIST),
                 'a character outside the URL-safe set');
    unauthorized($l->req({Authorization => 'Bearer '}, GET => $LIST),
                 'empty credential');
};

subtest 'a revoked key is refused at once' => sub {
    my $x = $l->workspace('org_auth_revoke');
    $l->answer($l->list($x), 200, 'before revocation');

    my $tx = $s->op(GET => '/workspaces/org_auth_revoke/keys');
    my ($key_id) = map { $_->{keyId} } @{ $tx->res->json->{keys} // [] };
    ok($key_id, 'the key id');
    $tx = $s->op(DELETE => "/workspaces/org_auth_revoke/keys/$key_id");
    ok($tx->res->is_success, 'revoked');

    unauthorized($l->list($x), 'after revocation');
};

subtest 'the credential is checked before the id' => sub {
    unauthorized($l->req(bearer('tuco_' . ('y' x 40)),
                         GET => '/api/line-requests/nope'),
                 'bad key and bad id: 401');
    unauthorized($l->req(undef, POST => '/api/line-requests/nope',
                         {action => 'cancel'}), 'no key, bad id, POST');
    unauthorized($l->req(undef, POST => '/api/line-requests', \'{bad'),
                 'no key and a malformed body: 401');

    for my $bad ('nope', 'ABCDEF0123456789abcdef01', '0' x 23, '0' x 25,
                 "${id}x", 'g' x 24)
    {
        my $b = $l->answer($l->get($w, $bad), 400, "id '$bad'");
        is_deeply($b, {error => 'Invalid line request id'}, "'$bad': body");
    }

    my $tx = $l->get($w, "$id/extra");
    $l->answer($tx, 400, 'an id with a further segment');
};

subtest 'another workspace\'s id is 404, never 403' => sub {
    my $b = $l->answer($l->get($w, $other), 404, 'GET another\'s');
    is_deeply($b, {error => 'Line request not found'}, 'body');

    my $unknown = $l->answer($l->get($w, 'f' x 24), 404, 'GET unknown id');
    is_deeply($unknown, $b, 'the same answer as an unknown id');

    $l->answer($l->manage($w, $other, 'cancel'), 404, 'cancel another\'s');
    $l->answer($l->manage($w, $other, 'payment_link'), 404,
               'payment_link another\'s');
    $l->answer($l->check($w, $other), 404, 'check another\'s line');
    is($l->lr($v, $other)->{provisioningStatus}, 'provisioning',
       'the other workspace\'s request is untouched');
};

# --- Clerk session tokens -------------------------------------------------

my $pk = $s->private_key;
my $public_pem = $pk->export_key_pem('public');

sub clerk_ok {
    my ($token, $name, $org) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $b = $l->answer($l->req(bearer($token), GET => $LIST), 200, $name);
    is($b->{lines}[0]{workspaceId}, $org // 'org_auth_a',
       "$name: the token's organization");
}

sub clerk_refused {
    my ($token, $name, $h) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    unauthorized($l->req($h // bearer($token), GET => $LIST), $name);
}

sub b64 { return encode_base64url(ref $_[0] ? encode_json($_[0]) : $_[0]) }

# RFC 7519 4.1.4: the current time MUST be before exp; with the leeway,
# before exp + 5 s. A token was served one second more, to now = exp + 5
# inclusive, verified or from the token cache.
subtest 'Clerk exp: refused from exp + leeway on' => sub {
    clerk_refused($s->clerk_token(o => {id => 'org_auth_a'}, exp => time - 5),
                  'exp + 5 s reached');
    my $exp = time - 3;
    my $tok = $s->clerk_token(o => {id => 'org_auth_a'}, exp => $exp);
    clerk_ok($tok, 'exp + 3 s: within the leeway, now cached');
    Time::HiRes::sleep(0.05) while time < $exp + 5;
    clerk_refused($tok, 'the cached token at exp + 5 s');
};

subtest 'Clerk tokens accepted' => sub {
    clerk_ok($s->clerk_token(o => {id => 'org_auth_a'}), 'v2, o.id');
    clerk_ok($s->clerk_token(v => undef, o => undef,
                             org_id => 'org_auth_a'), 'v1, org_id');
    clerk_ok($s->clerk_token(v => 1, o => undef, org_id => 'org_auth_b'),
             'v1 (v: 1), org_id', 'org_auth_b');
    clerk_ok($s->clerk_token(o => {id => 'org_auth_a'}, nbf => undef,
                             iat => undef), 'without nbf and iat');
    clerk_ok($s->clerk_token(o => {id => 'org_auth_a'}, exp => time - 2),
             'expired 2 s ago, within the 5 s leeway');
    # exp + leeway of the token cache must not overflow (make sanitize)
    my $far = $s->clerk_token(o => {id => 'org_auth_a'}, exp => 1e300);
    clerk_ok($far, 'exp 1e300');
    clerk_ok($far, 'exp 1e300, from the cache');
    # what Clerk puts on a session token's header
    clerk_ok($s->clerk_token(o => {id => 'org_auth_a'},
                             -header => {typ => 'JWT',
                                         cat => 'cl_B7d4PD111AAA'}),
             'typ JWT, session category');
    clerk_ok($s->clerk_token(o => {id => 'org_auth_a'},
                             -header => {cat => 'cl_I7d4PD111III'}),
             'the category of instances that ignore categories');

    my $tok = $s->clerk_token(o => {id => 'org_auth_a'});
    my $b = $l->answer($l->req({Cookie => "__session=$tok"}, GET => $LIST),
                       200, '__session cookie');
    is($b->{lines}[0]{workspaceId}, 'org_auth_a', 'cookie: the organization');

    $b = $l->answer($l->req({Cookie => "theme=dark; __session=$tok; a=b"},
                            GET => $LIST), 200, 'cookie among others');

    $b = $l->answer($l->check({Cookie => "__session=$tok"}, $id), 200,
                    'check-availability with the cookie');
    is($b->{lineId}, $id, 'its line');
};

# RFC 6265: cookie names are case-sensitive, and Clerk sets exactly
# __session. nginx's cookie parsers match a name in any case: a valid
# token under __SESSION (another cookie: a subdomain or a script may set
# one without touching the session) was taken as the session.
subtest 'the session cookie is named __session exactly' => sub {
    my $tok = $s->clerk_token(o => {id => 'org_auth_a'});
    for my $name (qw(__SESSION __Session)) {
        clerk_refused(undef, "a valid token in $name",
                      {Cookie => "$name=$tok"});
    }
    clerk_refused(undef, 'a valid token in __SESSION, among others',
                  {Cookie => "theme=dark; __SESSION=$tok; a=b"});

    my $b = $l->answer($l->req({Cookie => "__SESSION=x; __session=$tok"},
                               GET => $LIST),
                       200, '__session after a cookie of another case');
    is($b->{lines}[0]{workspaceId}, 'org_auth_a', 'its organization');
};

subtest 'a token without an active organization: 400' => sub {
    for my $case (
        [v2 => $s->clerk_token(o => undef)],
        [v1 => $s->clerk_token(v => undef, o => undef)],
    ) {
        my ($name, $tok) = @$case;
        my $b = $l->answer($l->req(bearer($tok), GET => $LIST), 400,
                           "$name without organization");
        is_deeply($b, {error => 'No active workspace'}, "$name: body");
    }

    my $tok = $s->clerk_token(o => undef);
    my $b = $l->answer($l->req(bearer($tok), POST => '/api/line-requests',
                               body()), 400, 'create without organization');
    is($b->{error}, 'No active workspace', 'create: body');
};

subtest 'an organization id no workspace can have: 401' => sub {
    # it would become the workspace, and part of its keys' hash tag
    for my $org ('org}x', 'org:x', 'org x', 'o' x 65) {
        clerk_refused($s->clerk_token(o => {id => $org}),
                      "o.id \"" . substr($org, 0, 8) . "\"");
        clerk_refused($s->clerk_token(v => undef, o => undef,
                                      org_id => $org),
                      "org_id \"" . substr($org, 0, 8) . "\"");
    }
    clerk_ok($s->clerk_token(o => {id => 'org_auth_a'}),
             'a valid one after them');
};

subtest 'Clerk token refusals (SPEC 4): 401' => sub {
    my $now = time;
    my %o = (o => {id => 'org_auth_a'});

    # alg none: no signature at all
    my $none = b64({alg => 'none', typ => 'JWT', kid => 'test-key-1'}) . '.'
             . b64({iss => $s->issuer, sub => 'user_x', exp => $now + 300,
                    v => 2, o => {id => 'org_auth_a'}}) . '.';
    clerk_refused($none, 'alg none');

    # HS256 keyed with the public key (the classic confusion attack)
    my $hs = encode_jwt(
        payload => {iss => $s->issuer, sub => 'user_x', exp => $now + 300,
                    v => 2, o => {id => 'org_auth_a'}},
        key => $public_pem, alg => 'HS256',
        extra_headers => {kid => 'test-key-1'});
    clerk_refused($hs, 'HS256 signed with the public key');

    clerk_refused($s->clerk_token(%o, -alg => 'RS512'), 'RS512');
    clerk_refused($s->clerk_token(%o, -header => {kid => 'unknown-kid'}),
                  'unknown kid');
    my $other = Crypt::PK::RSA->new;
    $other->generate_key(256, 65537);
    clerk_refused($s->clerk_token(%o, -key => $other),
                  'signed by another key');
    clerk_refused($s->clerk_token(%o, exp => $now - 60), 'expired');
    clerk_refused($s->clerk_token(%o, exp => undef), 'no exp');
    clerk_refused($s->clerk_token(%o, nbf => $now + 60), 'not yet valid');
    clerk_refused($s->clerk_token(%o, iat => $now + 60), 'issued later');
    clerk_refused($s->clerk_token(%o, iss => 'https://evil.example'),
                  'wrong issuer');
    clerk_refused($s->clerk_token(%o, iss => undef), 'no issuer');
    clerk_refused($s->clerk_token(%o, sts => 'pending'), 'pending session');
    clerk_refused($s->clerk_token(%o, sub => 42), 'sub not a string');
    clerk_refused($s->clerk_token(%o, -header => {cat => 'cl_B7d4PD333AAA'}),
                  'machine token category');

    # other kinds of token Clerk signs with the same instance key: a
    # third party holding one must not act as the user's organization
    clerk_refused($s->clerk_token(%o, -header => {cat => 'cl_B7d4PD222AAA'}),
                  'JWT template category');
    clerk_refused($s->clerk_token(%o, -header => {cat => 'cl_unknown'}),
                  'unknown category');
    clerk_refused($s->clerk_token(v => undef, o => undef,
                                  org_id => 'org_auth_a',
                                  -header => {typ => 'at+jwt'}),
                  'OAuth access token (typ at+jwt, org_id)');
    clerk_refused($s->clerk_token(%o, -header => {typ => 'application/at+jwt'}),
                  'OAuth access token (typ application/at+jwt)');
    clerk_refused($s->clerk_token(%o, sub => 'mch_2xyz'),
                  'machine subject (mch_)');

    my $good = $s->clerk_token(%o);
    my ($h, $p, $sig) = split /\./, $good;
    clerk_refused("$h=.$p.$sig", 'padded header segment');
    clerk_refused("$h.$p==.$sig", 'padded payload segment');
    clerk_refused("$h.$p.$sig=", 'padded signature');
    clerk_refused("$h.$p.${sig}*", 'stray character');
    clerk_refused("$h.$p", 'two segments');
    clerk_refused(substr($good, 0, -4) . 'AAAA', 'tampered signature');

    my $big = $s->clerk_token(%o, pad => 'x' x 9000);
    ok(length $big > 8192, 'an oversized token (' . length($big) . ' bytes)');
    clerk_refused($big, 'oversized token');

    clerk_refused(undef, 'a bad token in the cookie',
                  {Cookie => '__session=' . substr($good, 0, -4) . 'AAAA'});
};

subtest 'check-availability takes Clerk tokens only' => sub {
    unauthorized($l->req($w->{auth}, GET =>
                         "/api/lines/check-availability?id=$id"),
                 'an API key');
    $l->answer($l->check($w, $id), 200, 'a Clerk token');
};

# configured with capitals and the default port: browsers send the
# origin, and Clerk writes azp, lowercase and without it
subtest 'authorized parties (linegate_clerk_authorized_parties)' => sub {
    my $s2 = LG::Stack->new(CLERK_AZP =>
        'linegate_clerk_authorized_parties https://App.Linegate.test:443 '
        . 'https://admin.linegate.test;')->start;
    my $l2 = LG::Lines->new($s2);
    my $x = $l2->workspace('org_azp');
    my $get = sub {
        $l2->req(bearer($s2->clerk_token(o => {id => 'org_azp'}, @_)),
                 GET => $LIST);
    };

    $l2->answer($get->(azp => 'https://app.linegate.test'), 200,
                'a listed azp (configured as https://App.Linegate.test:443)');
    $l2->answer($get->(azp => 'https://admin.linegate.test'), 200,
                'the other listed azp');
    for my $case ([missing => undef], [wrong => 'https://evil.example'],
                  [prefix => 'https://app.linegate.test.evil'],
                  ['with the default port' => 'https://app.linegate.test:443'],
                  ['with capitals' => 'https://App.linegate.test'])
    {
        my $b = $l2->answer($get->(azp => $case->[1]), 401,
                            "azp $case->[0]");
        is_deeply($b, {error => 'Unauthorized'}, "azp $case->[0]: body");
    }

    $s2->stop;
};

done_testing;
