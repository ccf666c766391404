# Cookie-authenticated writes refuse cross-site forms: with the Clerk
# __session cookie and no Authorization header, a POST that is not
# application/json gets 415 UNSUPPORTED_MEDIA_TYPE, and, with
# linegate_clerk_authorized_parties, an Origin outside the list gets 403
# FORBIDDEN_ORIGIN, both in the Lines API's format, before the token is
# looked at, writing nothing. Bearer credentials (API keys, Clerk tokens in
# Authorization) and reads are not concerned.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);
use Mojo::JSON qw(encode_json);

my $DASH = 'https://app.linegate.test';

my $s = LG::Stack->new(CLERK_AZP =>
    "linegate_clerk_authorized_parties $DASH https://admin.linegate.test;")
    ->start;
my $l = LG::Lines->new($s);

my $w = $l->workspace('org_cookie');
my ($id) = $l->created($w);
my $tok = $s->clerk_token(o => {id => 'org_cookie'}, azp => $DASH);
my $cookie = {Cookie => "__session=$tok"};
my $CREATE = '/api/line-requests';

# a POST with raw bytes and exactly the given headers
sub post {
    my ($path, $headers, $body) = @_;
    # Mojo adds no Content-Type to a raw body: undef sends none
    my %h = map { defined $headers->{$_} ? ($_ => $headers->{$_}) : () }
            keys %$headers;
    return $s->ua->start($s->ua->build_tx(POST => $s->url($path) => \%h
                                          => $body // ''));
}

my $json = encode_json(body());
my $cancel = encode_json({action => 'cancel'});

subtest 'cross-site forms with the cookie: 415, nothing written' => sub {
    my $before = redis_dump($s->redis);
    for my $case (
        ['a urlencoded form', 'application/x-www-form-urlencoded',
         'firstName=Ada&lastName=Lovelace&channelType=phone'],
        ['a multipart form', 'multipart/form-data; boundary=x',
         "--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n"],
        ['a text/plain form holding JSON', 'text/plain', $json],
        ['no Content-Type', undef, $json],
        ['application/jsonp', 'application/jsonp', $json],
        ['application/json-seq', 'application/json-seq', $json],
    ) {
        my ($name, $ct, $body) = @$case;
        for my $path ($CREATE, "$CREATE/$id") {
            my $tx = post($path, {%$cookie, 'Content-Type' => $ct},
                          $path eq $CREATE ? $body : $cancel);
            $l->error_is($tx, 415, 'UNSUPPORTED_MEDIA_TYPE',
                         "$name, POST $path",
                         qr/session cookie must be application\/json/);
            ok(!defined $tx->res->headers->header('RateLimit'),
               "$name: no workspace counted");
        }
    }
    is_deeply(redis_dump($s->redis), $before, 'nothing written');
};

subtest 'a foreign Origin with the cookie: 403, nothing written' => sub {
    my $before = redis_dump($s->redis);
    for my $origin ('https://evil.example', 'null',
                    'https://app.linegate.test.evil.example',
                    'http://app.linegate.test', "$DASH/") {
        for my $path ($CREATE, "$CREATE/$id") {
            my $tx = post($path, {%$cookie, Origin => $origin,
                                  'Content-Type' => 'application/json'},
                          $path eq $CREATE ? $json : $cancel);
            $l->error_is($tx, 403, 'FORBIDDEN_ORIGIN',
                         "Origin $origin, POST $path",
                         qr/Origin is not an authorized party/);
        }
    }
    is_deeply(redis_dump($s->redis), $before, 'nothing written');

    # not application/json is told first
    my $tx = post($CREATE, {%$cookie, Origin => 'https://evil.example',
                            'Content-Type' => 'text/plain'}, $json);
    $l->error_is($tx, 415, 'UNSUPPORTED_MEDIA_TYPE',
                 'a foreign text/plain form');
};

subtest 'the dashboard: JSON, its Origin or none' => sub {
    my $tx = post($CREATE, {%$cookie, Origin => $DASH,
                            'Content-Type' => 'application/json'}, $json);
    my $b = $l->answer($tx, 201, 'create with the cookie, the dashboard\'s '
                                 . 'Origin');
    is($b->{line}{workspaceId}, 'org_cookie', 'in the workspace');

    $tx = post($CREATE, {%$cookie, Origin => 'HTTPS://ADMIN.linegate.test',
                         'Content-Type' => 'Application/JSON; charset=utf-8'},
               encode_json(body(channelType => 'email',
                                email => 'a@example.com')));
    $b = $l->answer($tx, 201, 'the other party, in capitals, a charset');

    $tx = post("$CREATE/$id", {%$cookie, 'Content-Type' => 'application/json'},
               encode_json({action => 'payment_link'}));
    isnt($tx->res->code, 415, 'no Origin (not a browser): not refused');
    isnt($tx->res->code, 403, 'no Origin: not 403');
    $l->answer($tx, $tx->res->code, 'no Origin: an answer of the API');
};

subtest 'the cookie among others, first or last' => sub {
    for my $c ("__session=$tok; theme=dark", "theme=dark; __session=$tok",
               "a=b; __session=$tok; theme=dark") {
        $l->answer($l->req({Cookie => $c}, GET => "$CREATE/$id"), 200,
                   "GET, Cookie: " . substr($c, 0, 20));
        my $tx = post("$CREATE/$id", {Cookie => $c,
                                      'Content-Type' => 'text/plain'},
                      $cancel);
        $l->error_is($tx, 415, 'UNSUPPORTED_MEDIA_TYPE',
                     'POST, Cookie: ' . substr($c, 0, 20));
    }
};

subtest 'reads and Authorization credentials are not concerned' => sub {
    $l->answer($l->req({%$cookie, Origin => 'https://evil.example'},
                       GET => "$CREATE/$id"), 200,
               'GET with the cookie and a foreign Origin');

    # the request is provisioning (an included line): a payment_link
    # reaches the API, which answers what docs/lines-api.md says of a
    # request not awaiting payment, 409 with its status (not 415 nor
    # 403, nor anything else)
    my $bearer = {Authorization => "Bearer $tok"};
    my $tx = post("$CREATE/$id", {%$bearer, Origin => 'https://evil.example',
                                  'Content-Type' => 'text/plain'},
                  encode_json({action => 'payment_link'}));
    my $b = $l->answer($tx, 409, 'a Clerk token in Authorization');
    is($b->{status}, 'provisioning', 'the request\'s status')
        or diag $tx->res->body;

    $tx = post("$CREATE/$id", {%{ $w->{auth} }, 'Content-Type' => 'text/plain'},
               encode_json({action => 'payment_link'}));
    $b = $l->answer($tx, 409, 'an API key');
    is($b->{status}, 'provisioning', 'the request\'s status')
        or diag $tx->res->body;
};

subtest 'without authorized parties: any Origin, JSON still required' => sub {
    my $s2 = LG::Stack->new->start;
    my $l2 = LG::Lines->new($s2);
    $l2->workspace('org_cookie2');
    my $c2 = {Cookie => '__session='
                        . $s2->clerk_token(o => {id => 'org_cookie2'})};
    my $tx = $s2->ua->post($s2->url($CREATE) => {%$c2,
        Origin => 'https://anywhere.example',
        'Content-Type' => 'application/json'} => $json);
    $l2->answer($tx, 201, 'any Origin');
    $tx = $s2->ua->post($s2->url($CREATE) => {%$c2,
        'Content-Type' => 'application/x-www-form-urlencoded'} => 'a=b');
    $l2->error_is($tx, 415, 'UNSUPPORTED_MEDIA_TYPE', 'a form');
    $s2->stop;
};

done_testing;
