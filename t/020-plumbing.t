# What every answer shares: X-Request-Id, JSON content type, the request id
# in the error log, 405 for a wrong method, and 400 for a body that is not
# a JSON object (nothing written to Redis); nginx's own error pages (a
# body over client_max_body_size, an invalid chunked body, deny,
# limit_req, auth_basic, "return 503;") in the API's JSON, nginx's page
# elsewhere.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;
use LG::OpenAPI qw(answer_matches);
use Mojo::Transaction::HTTP;

# /lg-413: a Lines location whose body limit sends a larger body to /err
# (error_page 413 =, an internal redirect), which proxies to a port where
# nothing listens; /lg-413-lg sends it to another linegate location;
# /lg-own-413 and /lg-413-keep keep the 413 (error_page 413 without =) and
# answer the operator's page or that of another linegate location; /plain
# reads a body (to proxy it) without linegate; /lg-deny-*, /lg-503*,
# /lg-500, /lg-limit*, /lg-auth: nginx refuses before linegate runs, in a
# location of each JSON API; /plain-*: the same without linegate
my ($dead_port) = LG::Stack::_free_ports(1);
my %deny = (lines => 'line_request_create', user => 'lines_by_user',
            prov => 'provision_confirm', op => 'operator',
            wh => 'stripe_webhook');
# the operator API's routes follow a prefix location (nginx -t refuses it
# in an exact one): /lg-deny-op/, /lg-503-op/, /lg-500/, /lg-auth/
my %deny_at = map { $_ => $_ eq 'op' ? '/lg-deny-op/' : "= /lg-deny-$_" }
              keys %deny;
my $deny_locations = join '', map { <<"LOCATION" } sort keys %deny;
        location $deny_at{$_} {
            deny all;
            add_header X-LG-Outcome \$linegate_outcome always;
            linegate_api $deny{$_};
        }
LOCATION
my $s = LG::Stack->new(stub => 0, HTTP_EXTRA => <<"HTTP",
limit_req_zone \$binary_remote_addr zone=lg_one:1m rate=1r/m;
    limit_req_zone \$binary_remote_addr zone=lg_two:1m rate=1r/m;
    limit_req_zone \$binary_remote_addr zone=lg_three:1m rate=1r/m;
    limit_req_zone \$binary_remote_addr zone=lg_four:1m rate=1r/m;
HTTP
                       SERVER_EXTRA => <<"EXTRA")->start;
location = /lg-413 {
            client_max_body_size 100;
            error_page 413 = /err;
            linegate_api line_request_create;
        }
        location = /err {
            proxy_pass http://127.0.0.1:$dead_port;
        }
        location = /lg-413-lg {
            client_max_body_size 100;
            error_page 413 = /api/lines/by-user;
            linegate_api line_request_create;
        }
        location = /lg-own-413 {
            error_page 413 /own-413;
            error_page 400 /own-413;
            linegate_api provision_confirm;
        }
        location = /own-413 {
            internal;
            default_type text/plain;
            return 200 "the operator's page";
        }
        location = /plain {
            proxy_pass http://127.0.0.1:$dead_port;
        }
        location = /lg-413-keep {
            client_max_body_size 100;
            error_page 413 /api/lines/by-user;
            linegate_api line_request_create;
        }
$deny_locations
        location = /lg-503 {
            add_header X-LG-Outcome \$linegate_outcome always;
            linegate_api lines_by_user;
            return 503;
        }
        location /lg-503-op/ {
            add_header X-LG-Outcome \$linegate_outcome always;
            linegate_api operator;
            return 503;
        }
        location /lg-500/ {
            add_header X-LG-Outcome \$linegate_outcome always;
            linegate_api operator;
            return 500;
        }
        location = /lg-limit {
            limit_req zone=lg_one nodelay;
            add_header X-LG-Outcome \$linegate_outcome always;
            linegate_api provision_preview;
        }
        location = /lg-limit-429 {
            limit_req zone=lg_two nodelay;
            limit_req_status 429;
            add_header X-LG-Outcome \$linegate_outcome always;
            linegate_api lines_by_user;
        }
        location = /lg-limit-prov-429 {
            limit_req zone=lg_four nodelay;
            limit_req_status 429;
            add_header X-LG-Outcome \$linegate_outcome always;
            add_header Retry-After 30 always;
            linegate_api provision_confirm;
        }
        location = /lg-rewrite {
            linegate_api lines_by_user;
            rewrite ^ /lg-deny-prov last;
        }
        location /lg-auth/ {
            auth_basic "linegate test";
            auth_basic_user_file /dev/null;
            add_header X-LG-Outcome \$linegate_outcome always;
            linegate_api operator;
        }
        location = /plain-deny {
            deny all;
        }
        location = /plain-503 {
            return 503;
        }
        location = /plain-limit {
            limit_req zone=lg_three nodelay;
            proxy_pass http://127.0.0.1:$dead_port;
        }
        location = /plain-auth {
            auth_basic "linegate test";
            auth_basic_user_file /dev/null;
            proxy_pass http://127.0.0.1:$dead_port;
        }
EXTRA
my $r = $s->redis;
my $token = $s->operator_token;

subtest 'every answer carries X-Request-Id and the JSON type' => sub {
    my %seen;
    for my $case (
        [200, 'GET inventory',  $s->op(GET => '/inventory')],
        [401, 'no token',       $s->ua->get($s->url('/_linegate/inventory'))],
        [404, 'unknown route',  $s->op(GET => '/nope')],
        [404, 'unknown id',     $s->op(GET => '/workspaces/org_none')],
        [400, 'invalid id',     $s->op(GET => '/workspaces/a.b')],
        [405, 'wrong method',   $s->op(PATCH => '/workspaces/a', {})],
        [400, 'bad JSON',       $s->op(PUT => '/workspaces/a', \'{')],
    ) {
        my ($status, $name, $tx) = @$case;
        answer_is($tx, $status, $name);
        $seen{ $tx->res->headers->header('X-Request-Id') // '' }++;
    }
    is(scalar keys %seen, 7, 'a different id for every request');
};

# $request_id: nginx's own by default; linegate's per-worker generator
# (SipHash of a counter under a random key) with linegate_fast_request_id
# on: the same shape, never the same twice, no half shared
sub request_ids {
    my ($stack, $n) = @_;
    my (%seen, %half);
    my ($bad, $shared) = (0, 0);
    for (1 .. $n) {
        my $tx = $stack->op(GET => '/workspaces/org_none');
        my $id = $tx->res->headers->header('X-Request-Id') // '';
        $bad++ unless $id =~ /^[0-9a-f]{32}\z/;
        $seen{$id}++;
        $shared++ if $half{ substr $id, 0, 16 }++ || $half{ substr $id, 16 }++;
    }
    return ($bad, scalar keys %seen, $shared);
}

subtest 'request ids: 32 hex digits, unique' => sub {
    my ($bad, $distinct, $shared) = request_ids($s, 200);
    is($bad, 0, 'default: every id is 32 lowercase hex digits');
    is($distinct, 200, 'default: 200 requests, 200 ids');
    is($shared, 0, 'default: no half of an id seen twice');

    my $fast = LG::Stack->new(stub => 0,
        HTTP_EXTRA => 'linegate_fast_request_id on;')->start;
    ($bad, $distinct, $shared) = request_ids($fast, 400);
    is($bad, 0, 'on: the same shape');
    is($distinct, 400, 'on: 400 requests, 400 ids');
    is($shared, 0, 'on: no half of an id seen twice (no per-worker prefix)');
    my $tx = $fast->op(PUT => '/workspaces/org_log', \'{');
    my $id = $tx->res->headers->header('X-Request-Id');
    like($fast->error_log, qr/, request_id: \Q$id\E\b/,
         'on: the error log names it as well');
    unlike($fast->error_log, qr/SipHash self-test failed/,
           'on: the SipHash of crypto.c passes the self-test');
    $fast->stop;
};

subtest 'the error log names the request id' => sub {
    my $tx = $s->op(PUT => '/workspaces/org_log', \'{"plan": "mini",');
    json_error_is($tx, 400, 'VALIDATION_ERROR', 'malformed JSON',
                  qr/Malformed JSON body/);
    my $id = $tx->res->headers->header('X-Request-Id');

    my ($line) = grep { /malformed JSON body/ && /\Q$id\E/ }
                 split /\n/, $s->error_log;
    ok($line, 'an error log line about it');
    like($line // '', qr/\[info\] .*linegate: malformed JSON body/,
         'logged at info by linegate');
    like($line // '', qr/, request_id: \Q$id\E\b/, 'with request_id: <id>');
};

# an internal redirect clears the modules' contexts: nginx's own part of
# an error log line (server, request, upstream, host) is still written
sub post_300 {
    my ($path) = @_;
    my $body = 'x' x 300;
    my $req = "POST $path HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            . "Content-Type: application/json\r\n"
            . "Authorization: Bearer not.a.jwt\r\n"
            . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            . sprintf("%x\r\n", length $body) . "$body\r\n0\r\n\r\n";
    return raw_http($s->port, $req);
}

subtest 'the error log after an internal redirect' => sub {
    my $from = length $s->error_log;
    my ($status) = post_300('/lg-413');
    is($status, 502, 'the body over the limit: /err, its upstream down');

    my ($line) = grep { /connect\(\) failed/ }
                 split /\n/, substr($s->error_log, $from);
    ok($line, 'the error line of /err') or return;
    like($line, qr/, server: /, 'server:');
    like($line, qr/, request: "POST \/lg-413 HTTP\/1\.1"/, 'request:');
    like($line, qr/, upstream: "http:\/\/127\.0\.0\.1:$dead_port\/err"/,
         'upstream:');
    like($line, qr/, host: "127\.0\.0\.1"/, 'host:');
    like($line, qr/, request_id: [0-9a-f]{32}\b/, 'and the request id');
};

# the linegate location redirected to logs the token it refuses; its ctx
# must not take linegate's handler for nginx's (a worker once called it
# for ever: SIGSEGV)
subtest 'the error log after a redirect to another linegate location' => sub {
    my $from = length $s->error_log;
    my ($status) = post_300('/lg-413-lg');
    is($status, 401, 'by-user, the token refused: 401');

    my $log = substr $s->error_log, $from;
    my ($line) = grep { /Clerk token refused/ } split /\n/, $log;
    ok($line, 'the error line of by-user') or return;
    like($line, qr/, request: "POST \/lg-413-lg HTTP\/1\.1"/, 'request:');
    like($line, qr/, host: "127\.0\.0\.1"/, 'host:');
    is(() = $line =~ /request_id: /g, 1, 'the request id once');
    unlike($log, qr/exited on signal/, 'no worker crashed');
};

subtest 'a malformed body is not quoted in the log' => sub {
    # jansson's reason ends "near '<the text>'": a token cut short
    my $tx = $s->op(PUT => '/workspaces/org_log',
                    \'{"plan": "lpv_Cut5hort0fToken');
    json_error_is($tx, 400, 'VALIDATION_ERROR', 'an unended string',
                  qr/Malformed JSON body/);
    my $id = $tx->res->headers->header('X-Request-Id');
    my ($line) = grep { /malformed JSON body/ && /\Q$id\E/ }
                 split /\n/, $s->error_log;
    like($line // '', qr/malformed JSON body: \S.* at offset \d+/,
         'the reason and the offset are logged');
    unlike($line // '', qr/Cut5hort|near/, 'not the body\'s text');
};

subtest 'the access log has the request id and the linegate variables' => sub {
    my $tx = $s->op(GET => '/workspaces/org_none');
    my $id = $tx->res->headers->header('X-Request-Id');

    # nginx writes the access log once the answer is sent: wait a little
    my $line;
    for (1 .. 100) {
        ($line) = grep { /id=\Q$id\E/ } split /\n/, $s->access_log;
        last if $line;
        select undef, undef, undef, 0.01;
    }
    like($line // '', qr{"GET /_linegate/workspaces/org_none HTTP/1.1" 404 },
         'request and status');
    like($line // '', qr/auth=operator outcome=NOT_FOUND/, 'auth, outcome');
    like($line // '', qr/tenant=org_none/, 'tenant');
};

subtest 'a wrong method is a 405 in JSON' => sub {
    for my $case ([PATCH => '/workspaces/org_a'],
                  [OPTIONS => '/inventory'],
                  [DELETE => '/workspaces/org_a'],
                  [PUT => '/inventory'],
                  [GET => '/accounts/acct_a/credentials']) {
        my ($m, $p) = @$case;
        my $body = answer_is($s->op($m => $p), 405, "$m $p");
        is($body->{error}, 'Method not allowed', "$m $p: error");
    }
};

my $long = '{"plan": "mini", "pad": "' . ('x' x 100_000) . '"}';

my @bad = (
    ['malformed JSON',        '{"plan": "mini",',          qr/Malformed/],
    ['trailing garbage',      '{"plan": "mini"} x',        qr/Malformed/],
    ['an array',              '[1]',                       qr/JSON object/],
    ['a string',              '"x"',                       qr/./],
    ['a number',              '42',                        qr/./],
    ['null',                  'null',                      qr/./],
    ['invalid UTF-8',         qq({"plan": "mini\xff"}),    qr/Malformed/],
    ['overlong UTF-8',        qq({"plan": "\xc0\xafmini"}), qr/Malformed/],
    ['a lone surrogate',      '{"plan": "\\ud800"}',       qr/Malformed/],
    ['a duplicate key',       '{"plan": "mini", "plan": "growth"}',
     qr/Malformed/],
    ['a body over the limit', $long,                       qr/too large/],
);

subtest 'a body that is not a JSON object is a 400, nothing written' => sub {
    my $before = redis_dump($r);
    my $size = $r->dbsize;

    for my $case (@bad) {
        my ($name, $bytes, $re) = @$case;
        my $tx = $s->op(PUT => '/workspaces/org_plumb', \$bytes,
                        'Content-Type' => 'application/json');
        json_error_is($tx, 400, 'VALIDATION_ERROR', $name, $re);
    }

    is($r->dbsize, $size, 'DBSIZE unchanged');
    is_deeply(redis_dump($r), $before, 'no key written or changed');
    ok(!$r->exists('lg:{ws:org_plumb}'), 'the workspace was not created');
};

# The operator location of the template has "linegate_max_body 64k;" and
# no client_body_buffer_size: the module raises nginx's (16k) to 64k
# there, so a body between the two is read, not spooled to a file and
# refused (docs/directives.md, linegate_max_body; docs/operator.md)
subtest 'a body over nginx\'s body buffer, within linegate_max_body' => sub {
    my $pad = 'x' x 40_000;
    my $tx = $s->op(PUT => '/workspaces/org_big_body',
                    {plan => 'mini', pad => $pad});
    cmp_ok(length $tx->req->body, '>', 32_768, 'a body of over 32 KB');
    is($tx->res->code, 200, 'accepted') or diag($tx->res->body);
    unlike($s->error_log, qr/buffered to a temporary file/,
           'not written to a file');
};

sub chunked {
    my ($body) = @_;
    my $req = "PUT /_linegate/workspaces/org_chunked HTTP/1.1\r\n"
            . "Host: 127.0.0.1\r\nAuthorization: Bearer $token\r\n"
            . "Content-Type: application/json\r\n"
            . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    while (length $body) {
        my $chunk = substr $body, 0, 4096, '';
        $req .= sprintf("%x\r\n", length $chunk) . "$chunk\r\n";
    }
    return raw_http($s->port, $req . "0\r\n\r\n");
}

# A chunked body is refused once more than linegate_max_body has come,
# with the 400 a Content-Length over the limit gets (SPEC 1): before, it
# was read whole, past the body buffer into a temporary file (up to
# client_max_body_size, without end with "client_max_body_size 0"),
# before its credential was checked, then refused 400.
subtest 'chunked bodies' => sub {
    my $before = redis_dump($r);
    my $from = length $s->error_log;

    my ($status, $h, $body) = chunked($long);
    is($status, 400, 'chunked, over the limit: 400');
    my $log = substr $s->error_log, $from;
    unlike($log, qr/buffered to a temporary file/,
           'chunked, over the limit: not written to a file');
    like($log, qr/linegate: request body over linegate_max_body \(65536 bytes\): refused/,
         'chunked, over the limit: logged');
    like($h->{'content-type'} // '', qr{^application/json; charset=utf-8$},
         'chunked, over the limit: JSON');
    like($h->{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
         'chunked, over the limit: X-Request-Id');
    my $json = eval { Mojo::JSON::decode_json($body) } // {};
    is($json->{code}, 'VALIDATION_ERROR', 'chunked, over the limit: code');
    is($json->{error}, 'Request body too large', 'chunked: error');
    is_deeply(redis_dump($r), $before, 'chunked, over the limit: no write');

    ($status, $h, $body) = chunked('{"plan": "mini"}');
    is($status, 200, 'chunked, small: accepted');
    is(eval { Mojo::JSON::decode_json($body)->{plan} }, 'mini',
       'chunked, small: the workspace');
};

# A body over client_max_body_size (1m by default) is refused by nginx
# before linegate reads it, on its Content-Length: 413. A chunked one is
# refused by linegate once more than linegate_max_body of it has come
# (before nginx's 1m): the 400 of a body over linegate_max_body (SPEC 1),
# the same JSON. Sent whole: nginx reads and drops the rest of it.
my $BIG = 'x' x (2 * 1024 * 1024);

sub big {
    my ($method, $path, $how, $extra) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            . "Authorization: Bearer $token\r\n" . ($extra // '')
            . "Content-Type: application/json\r\n";
    if ($how eq 'chunked') {
        $req .= "Transfer-Encoding: chunked\r\n\r\n";
        for (my $i = 0; $i < length $BIG; $i += 65536) {
            $req .= sprintf("%x\r\n", 65536) . substr($BIG, $i, 65536)
                  . "\r\n";
        }
        $req .= "0\r\n\r\n";
    } else {
        $req .= 'Content-Length: ' . length($BIG) . "\r\n\r\n$BIG";
    }
    return raw_http($s->port, $req, 20);
}

my $too_large = 'Request body too large';
my %json_413 = (
    'the Lines API'         => [POST => '/api/line-requests',
                                { error => $too_large,
                                  code => 'VALIDATION_ERROR' }],
    'the Lines API (GET)'   => [GET => '/api/lines/by-user',
                                { error => $too_large }],
    'the Provisioning API'  => [POST => '/accounts/lines/provision-confirm',
                                { status => 'ERROR', message => $too_large }],
    'the operator API'      => [PUT => '/_linegate/workspaces/org_big',
                                { error => $too_large,
                                  code => 'VALIDATION_ERROR' }],
    'the webhook'           => [POST => '/webhooks/stripe',
                                { error => $too_large }],
);

subtest 'a body over client_max_body_size: 413 in the API\'s JSON' => sub {
    for my $api (sort keys %json_413) {
        my ($method, $path, $want) = @{ $json_413{$api} };
        for my $how ('length', 'chunked') {
            my $name = "$api, $how";
            my $want_status = $how eq 'chunked' ? 400 : 413;
            my ($status, $h, $body) = big($method, $path, $how);
            is($status, $want_status, "$name: $want_status");
            is($h->{'content-type'}, 'application/json; charset=utf-8',
               "$name: JSON");
            is($h->{'content-length'}, length $body,
               "$name: Content-Length is the JSON's");
            like($h->{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
                 "$name: X-Request-Id");
            is($h->{'cache-control'}, 'no-store', "$name: no-store");
            is($h->{connection}, 'close', "$name: closed, as nginx does");
            is_deeply(scalar eval { Mojo::JSON::decode_json($body) }, $want,
                      "$name: the API's error") or diag $body;

            my $tx = Mojo::Transaction::HTTP->new;
            $tx->req->method($method)->url->parse($path);
            $tx->res->code($status)->body($body);
            $tx->res->headers->header($_ => $h->{$_}) for keys %$h;
            answer_matches($tx, $name);
        }
    }

    # nginx pads its page for MSIE and Chrome (msie_padding): not the JSON
    my $chrome = "User-Agent: Mozilla/5.0 Chrome/120.0.0.0\r\n";
    for my $how ('length', 'chunked') {
        my ($status, $h, $body) = big(GET => '/accounts/limits', $how,
                                      $chrome);
        my $want_status = $how eq 'chunked' ? 400 : 413;
        is($status, $want_status, "Chrome, $how: $want_status");
        is($h->{'content-length'}, length $body, "Chrome, $how: its length");
        is_deeply(scalar eval { Mojo::JSON::decode_json($body) },
                  { status => 'ERROR', message => $too_large },
                  "Chrome, $how: the JSON alone") or diag $body;
    }

    my ($status, $h, $body) = big(HEAD => '/api/line-requests', 'length');
    is($status, 413, 'HEAD: 413');
    is($h->{'content-type'}, 'application/json; charset=utf-8',
       'HEAD: JSON');
    is($h->{'content-length'}, length(Mojo::JSON::encode_json(
           { error => $too_large, code => 'VALIDATION_ERROR' })),
       'HEAD: the length of the JSON');
    is($body, '', 'HEAD: no body');
};

subtest 'a body over client_max_body_size elsewhere: nginx\'s 413' => sub {
    # /metrics reads no body: a chunked one is dropped (200)
    for my $case ([POST => '/plain', 'length', 'chunked'],
                  [GET => '/metrics', 'length']) {
        my ($method, $path, @how) = @$case;
        for my $how (@how) {
            my $name = "$path, $how";
            my ($status, $h, $body) = big($method, $path, $how);
            is($status, 413, "$name: 413");
            is($h->{'content-type'}, 'text/html', "$name: HTML");
            like($body, qr{<title>413 Request Entity Too Large</title>},
                 "$name: nginx's page");
            is($h->{'content-length'}, length $body, "$name: its length");
            ok(!exists $h->{'x-request-id'}, "$name: no X-Request-Id");
        }
    }

    my ($status, $h, $body) = big(POST => '/plain', 'length',
                                  "User-Agent: Chrome/120.0.0.0\r\n");
    like($body, qr{</html>\r?\n<!-- a padding to disable MSIE}s,
         '/plain, Chrome: nginx\'s page, padded');

    ($status, $h, $body) = big(POST => '/lg-own-413', 'length');
    is($status, 413, 'error_page 413, length: 413');
    is($body, "the operator's page", 'error_page 413, length: theirs');
    is($h->{'content-type'}, 'text/plain',
       'error_page 413, length: their type');

    # chunked: refused by linegate_max_body before nginx's 1m, the API's
    # 400, as with a Content-Length (its error_page 413 is for nginx's
    # limit, and its error_page 400 is not taken either)
    ($status, $h, $body) = big(POST => '/lg-own-413', 'chunked');
    is($status, 400, 'error_page 413, chunked: linegate_max_body\'s 400');
    is_deeply(scalar eval { Mojo::JSON::decode_json($body) },
              { status => 'ERROR', message => $too_large },
              'error_page 413, chunked: the API\'s error') or diag $body;

    # 300 bytes over its 100: by-user answers (within its own bound)
    ($status, $h, $body) = post_300('/lg-413-keep');
    is($status, 413, 'error_page 413 to linegate: 413');
    is_deeply(scalar eval { Mojo::JSON::decode_json($body) },
              { error => 'Unauthorized' },
              'error_page 413 to linegate: by-user\'s answer');
};

# nginx's other error pages: one request, the connection closed after it
sub plain_req {
    my ($method, $path, $extra, $body) = @_;
    local $SIG{PIPE} = 'IGNORE';
    return raw_http($s->port, "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              . "Connection: close\r\n" . ($extra // '')
                              . "\r\n" . ($body // ''), 10);
}

# an invalid chunked body, found as linegate reads it (nginx's 400)
my $bad_chunks = "Authorization: Bearer $token\r\n"
               . "Content-Type: application/json\r\n"
               . "Transfer-Encoding: chunked\r\n";

# outcome nginx_error by API (the webhook's outcome is its event's type)
sub nginx_outcomes {
    my %n;
    my $text = $s->ua->get($s->url('/metrics'))->res->body;
    $n{$1} = $2 while $text =~ /^linegate_http_outcomes_total
                                 \{api="(\w+)",outcome="nginx_error"\}
                                 \ (\d+)$/mgx;
    $n{stripe_webhook} += $1 while $text =~ /^linegate_webhook_events_total
                                 \{type="nginx_error",result="\dxx"\}
                                 \ (\d+)$/mgx;
    return \%n;
}

subtest 'nginx\'s other error pages: the API\'s JSON' => sub {
    my $forbidden = { error => 'Forbidden' };
    my $unavailable = { error => 'Service Unavailable' };
    my $bad = { error => 'Bad Request', code => 'VALIDATION_ERROR' };

    # the first request of a limit_req location passes (linegate's 401)
    my ($status) = plain_req(POST => '/lg-limit');
    is($status, 401, 'limit_req: the first request passes');
    ($status) = plain_req(GET => '/lg-limit-429');
    is($status, 401, 'limit_req 429: the first request passes');
    ($status) = plain_req(POST => '/lg-limit-prov-429');
    is($status, 401, 'limit_req 429, Provisioning: the first request passes');

    my $before = nginx_outcomes();

    # [name, request, status, body, as (method, path) of openapi.yaml]
    my @cases = (
        ['deny, the Lines API', [POST => '/lg-deny-lines'], 403,
         $forbidden, [POST => '/api/line-requests']],
        ['deny, by-user', [GET => '/lg-deny-user'], 403,
         $forbidden, [GET => '/api/lines/by-user']],
        ['deny, the Provisioning API', [POST => '/lg-deny-prov'], 403,
         { status => 'ERROR', message => 'Forbidden' },
         [POST => '/accounts/lines/provision-confirm']],
        ['deny, the operator API', [GET => '/lg-deny-op/'], 403,
         $forbidden, [GET => '/_linegate/inventory']],
        ['deny, the webhook', [POST => '/lg-deny-wh'], 403,
         $forbidden, [POST => '/webhooks/stripe']],
        ['return 503, by-user', [GET => '/lg-503'], 503,
         $unavailable, [GET => '/api/lines/by-user']],
        ['return 503, the operator API', [GET => '/lg-503-op/'], 503,
         $unavailable, [GET => '/_linegate/inventory']],
        ['return 500, the operator API', [GET => '/lg-500/'], 500,
         { error => 'Internal error', code => 'INTERNAL_ERROR' },
         [GET => '/_linegate/inventory']],
        ['limit_req, the Provisioning API', [POST => '/lg-limit'], 503,
         { status => 'ERROR', message => 'Service Unavailable' },
         [POST => '/accounts/lines/provision-preview']],
        ['limit_req_status 429, by-user', [GET => '/lg-limit-429'], 429,
         { error => 'Rate limit exceeded', code => 'RATE_LIMITED' },
         [GET => '/api/lines/by-user']],
        ['limit_req_status 429, the Provisioning API',
         [POST => '/lg-limit-prov-429'], 429,
         { status => 'ERROR', error => 'rate_limited',
           message => 'Rate limit exceeded' },
         [POST => '/accounts/lines/provision-confirm']],
        ['auth_basic, the operator API', [GET => '/lg-auth/'], 401,
         { error => 'Unauthorized' }, [GET => '/_linegate/inventory']],
        ['invalid chunked body, the Lines API',
         [POST => '/api/line-requests', $bad_chunks, "zz\r\n"], 400,
         $bad, undef],
        ['invalid chunked body, the Provisioning API',
         [POST => '/accounts/lines/provision-confirm', $bad_chunks,
          "zz\r\n"], 400,
         { status => 'ERROR', message => 'Bad Request' }, undef],
        ['invalid chunked body, the operator API',
         [PUT => '/_linegate/workspaces/org_chunks', $bad_chunks, "zz\r\n"],
         400, $bad, undef],
        ['invalid chunked body, the webhook',
         [POST => '/webhooks/stripe', $bad_chunks, "zz\r\n"], 400,
         { error => 'Bad Request' }, undef],
    );

    for my $case (@cases) {
        my ($name, $req, $want_status, $want, $as) = @$case;
        my ($status, $h, $body) = plain_req(@$req);
        is($status, $want_status, "$name: $want_status");
        is($h->{'content-type'}, 'application/json; charset=utf-8',
           "$name: JSON");
        is($h->{'content-length'}, length $body,
           "$name: Content-Length is the JSON's");
        like($h->{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
             "$name: X-Request-Id");
        is($h->{'cache-control'}, 'no-store', "$name: no-store");
        is_deeply(scalar eval { Mojo::JSON::decode_json($body) }, $want,
                  "$name: the API's error") or diag $body;
        is($h->{'x-lg-outcome'}, 'nginx_error',
           "$name: \$linegate_outcome") if $req->[1] =~ /^\/lg-/;

        my $tx = Mojo::Transaction::HTTP->new;
        $tx->req->method($req->[0])->url->parse($req->[1]);
        $tx->res->code($status)->body($body);
        $tx->res->headers->header($_ => $h->{$_}) for keys %$h;
        answer_matches($tx, $name, @{ $as // [] });
    }

    # auth_basic's challenge stays
    my ($st, $h) = plain_req(GET => '/lg-auth/');
    is($h->{'www-authenticate'}, 'Basic realm="linegate test"',
       'auth_basic: WWW-Authenticate kept');

    # counted: the /lg-* cases above, by API
    my $after = nginx_outcomes();
    my %want = (line_request_create => 2, lines_by_user => 3,
                provision_confirm => 3, operator => 6, stripe_webhook => 2,
                provision_preview => 1);
    for my $api (sort keys %want) {
        is(($after->{$api} // 0) - ($before->{$api} // 0), $want{$api},
           "$api: $want{$api} answers with outcome nginx_error counted");
    }

    # nginx's Retry-After (add_header here; linegate_limit's) stays
    my (undef, $rh) = plain_req(POST => '/lg-limit-prov-429');
    is($rh->{'retry-after'}, 30, 'limit_req 429: nginx\'s Retry-After kept');

    my ($hst, $hh, $hbody) = plain_req(HEAD => '/lg-deny-lines');
    is($hst, 403, 'HEAD: 403');
    is($hh->{'content-type'}, 'application/json; charset=utf-8',
       'HEAD: JSON');
    is($hh->{'content-length'}, length(Mojo::JSON::encode_json($forbidden)),
       'HEAD: the length of the JSON');
    is($hbody // '', '', 'HEAD: no body');
};

# nginx's own lines about a request it refused before linegate's handler
# (deny in the access phase, limit_req in preaccess) carry the id of its
# JSON answer, after nginx's own part
subtest 'nginx\'s error pages: its log lines name the request id' => sub {
    for my $case (['deny', [GET => '/lg-deny-op/'],
                   qr/access forbidden by rule/],
                  ['limit_req', [POST => '/lg-limit-prov-429'],
                   qr/limiting requests/])
    {
        my ($name, $req, $re) = @$case;
        my $from = length $s->error_log;
        my (undef, $h) = plain_req(@$req);
        my $id = $h->{'x-request-id'} // '';
        like($id, qr/^[0-9a-f]{32}$/, "$name: the answer's X-Request-Id");
        my ($line) = grep { /$re/ } split /\n/,
                     substr($s->error_log, $from);
        ok($line, "$name: nginx's error line") or next;
        like($line, qr/, request: "\Q$req->[0] $req->[1]\E HTTP\/1\.1"/,
             "$name: nginx's own part");
        like($line, qr/, request_id: \Q$id\E\b/,
             "$name: with request_id: <id>");
    }
};

# the ctx made in the rewrite phase goes with a "rewrite ... last" into
# another location: the page is that location's API's
subtest 'rewrite last into another API: its error format' => sub {
    my ($status, $h, $body) = plain_req(GET => '/lg-rewrite');
    is($status, 403, 'deny there: 403');
    is_deeply(scalar eval { Mojo::JSON::decode_json($body) },
              { status => 'ERROR', message => 'Forbidden' },
              'the Provisioning API\'s error') or diag $body;
    is($h->{'x-lg-outcome'}, 'nginx_error', '$linegate_outcome');
};

subtest 'nginx\'s other error pages elsewhere: its HTML' => sub {
    my ($status) = plain_req(GET => '/plain-limit');
    for my $case (['deny', [GET => '/plain-deny'], 403, 'Forbidden'],
                  ['return 503', [GET => '/plain-503'], 503,
                   'Service Temporarily Unavailable'],
                  ['limit_req', [GET => '/plain-limit'], 503,
                   'Service Temporarily Unavailable'],
                  ['auth_basic', [GET => '/plain-auth'], 401,
                   'Authorization Required'],
                  ['invalid chunked body',
                   [POST => '/plain', $bad_chunks, "zz\r\n"], 400,
                   'Bad Request'])
    {
        my ($name, $req, $want_status, $title) = @$case;
        my ($status, $h, $body) = plain_req(@$req);
        is($status, $want_status, "$name: $want_status");
        is($h->{'content-type'}, 'text/html', "$name: HTML");
        like($body, qr{<title>$want_status \Q$title\E</title>},
             "$name: nginx's page");
        ok(!exists $h->{'x-request-id'}, "$name: no X-Request-Id");
    }
    my ($st, $h) = plain_req(GET => '/plain-auth');
    is($h->{'www-authenticate'}, 'Basic realm="linegate test"',
       'auth_basic: WWW-Authenticate');
};

done_testing;
