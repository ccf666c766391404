# linegate_limit_phase: where a location decides. preaccess (the default,
# limit_req's place) runs before auth_request and deny: their refusals are
# charged; last in the phase, after limit_req, whose 503s are not (t/410).
# precontent runs after the access phase: a request auth_request or deny
# refuses costs nothing, and a variable of auth_request_set can be the
# key. Decided once across try_files and
# error_page in either phase; under "satisfy any" it grants nothing.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Socket::INET;
use LG::Stack;
use LG::Test ();
use LG::Limit qw(redis_now_us rl_key);

# auth_request is in Debian's and nginx.org's nginx, not in one built from
# source without --with-http_auth_request_module (the Makefile's matrix
# adds it). The nginx LG::Stack runs (LG_NGINX): the matrix's own, whose
# -V the check must read, not the packaged one's
my $nginx = $ENV{LG_NGINX} // '/usr/sbin/nginx';
plan skip_all => "$nginx has no auth_request module "
                 . '(--with-http_auth_request_module)'
    unless `$nginx -V 2>&1` =~ /--with-http_auth_request_module/;

my $dir = LG::Test::public_dir('file.txt' => "static file\n",
                               'limited.txt' => 'limited');

# the authorizer: a server of its own that auth_request proxies to; 204
# with X-Id for the token "good", else 401
my ($aport) = do {
    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                     LocalPort => 0, Listen => 1);
    my $p = $sock->sockport;
    close $sock;
    $p;
};

my $http = <<"CONF";
    linegate_limit_zone ph key=\$http_x_user rate=1r/h burst=9;
    linegate_limit_zone small key=\$http_x_user rate=1r/h burst=1;
    linegate_limit_zone ia key=\$auth_id rate=1r/h burst=9;
    limit_req_zone \$http_x_user zone=lr:1m rate=1r/m;

    server {
        listen 127.0.0.1:$aport;
        location = /authz {
            add_header X-Id "id-\$http_x_user" always;
            if (\$http_x_token = "good") { return 204; }
            return 401;
        }
    }
CONF

my $auth = <<"CONF";
            auth_request /auth;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
CONF

my $server = <<"CONF";
        location = /auth {
            internal;
            proxy_pass http://127.0.0.1:$aport/authz;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
        location /pre/ {
            linegate_limit zone=ph;
$auth
        }
        location /post/ {
            linegate_limit zone=ph;
            linegate_limit_phase precontent;
$auth
        }
        location /deny/ {
            linegate_limit zone=ph;
            linegate_limit_phase precontent;
            deny all;
            root $dir; try_files /file.txt =404;
        }
        location /any/ {
            satisfy any;
            deny all;
            linegate_limit zone=ph;
            linegate_limit_phase precontent;
$auth
        }
        location /rl-pre/ {
            limit_req zone=lr;
            linegate_limit zone=ph;
            root $dir; try_files /file.txt =404;
        }
        location /rl-post/ {
            limit_req zone=lr;
            linegate_limit zone=ph;
            linegate_limit_phase precontent;
            root $dir; try_files /file.txt =404;
        }
        location /set/ {
            auth_request /auth;
            auth_request_set \$auth_id \$upstream_http_x_id;
            linegate_limit zone=ia;
            linegate_limit_phase precontent;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
        }
        location /set-pre/ {
            auth_request /auth;
            auth_request_set \$auth_id \$upstream_http_x_id;
            linegate_limit zone=ia;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
        }
        location /redir/ {
            linegate_limit zone=ph;
            linegate_limit_phase precontent;
            try_files /nothing \@post;
        }
        location \@post {
            linegate_limit zone=ph;
            linegate_limit_phase precontent;
            root $dir; try_files /file.txt =404;
        }
        location /redir-pre/ {
            linegate_limit zone=ph;
            linegate_limit_phase precontent;
            try_files /nothing \@pre;
        }
        location \@pre {
            linegate_limit zone=ph;
            root $dir; try_files /file.txt =404;
        }
        location /small/ {
            linegate_limit zone=small;
            linegate_limit_phase precontent;
            error_page 429 \@limited;
$auth
        }
        location \@limited {
            linegate_limit zone=ph;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /limited.txt =404;
        }
        location /api-limited/ {
            linegate_api operator;
            linegate_limit zone=small;
            linegate_limit_phase precontent;
        }
        location /api-limited-pre/ {
            linegate_api operator;
            linegate_limit zone=small;
        }
        location /dry/ {
            linegate_limit zone=small;
            linegate_limit_phase precontent;
            linegate_limit_dry_run on;
$auth
        }
CONF

my $s = LG::Stack->new(stub => 0, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $r = $s->redis;
my $ua = $s->ua;
my $n = 0;

sub user { return 'u' . ++$n . '_' . $$ }

sub get {
    my ($path, %h) = @_;
    return $ua->get($s->url($path) => \%h)->res;
}

# how many admissions the key holds: its TAT is one interval (1 h) ahead
# of now per admission (a fresh key)
sub charged {
    my ($zone, $v) = @_;
    my $tat = $r->get(rl_key($zone, $v));
    return 0 unless defined $tat;
    return sprintf('%.0f', ($tat - redis_now_us($r)) / 3600e6);
}

subtest 'preaccess (default): auth_request refusals are charged' => sub {
    my $u = user();
    for (1 .. 3) {
        my $res = get('/pre/', 'X-User' => $u, 'X-Token' => 'forged');
        is($res->code, 401, 'a forged token is refused');
    }
    is(charged('ph', $u), 3, 'yet each charged the key it named');
};

subtest 'precontent: auth_request refusals cost nothing' => sub {
    my $u = user();
    for (1 .. 3) {
        my $res = get('/post/', 'X-User' => $u, 'X-Token' => 'forged');
        is($res->code, 401, 'a forged token is refused');
        is($res->headers->header('RateLimit-Policy'), undef,
           'no RateLimit fields: nothing decided');
    }
    ok(!$r->exists(rl_key('ph', $u)), 'no Redis key made');

    my $res = get('/post/', 'X-User' => $u, 'X-Token' => 'good');
    is($res->code, 200, 'the verified request passes');
    is($res->headers->header('X-Limit'), 'PASSED', 'PASSED');
    is($res->headers->header('RateLimit-Policy'), '"ph";q=1;w=3600',
       'RateLimit-Policy');
    like($res->headers->header('RateLimit') // '', qr/^"ph";r=1;t=\d+$/,
         'RateLimit');
    is(charged('ph', $u), 1, 'charged once');
};

subtest 'precontent: deny, and satisfy any, refuse before the limit' => sub {
    my $u = user();
    is(get('/deny/', 'X-User' => $u)->code, 403, 'deny: 403');
    is(get('/any/', 'X-User' => $u, 'X-Token' => 'forged')->code, 401,
       'satisfy any, both refusing: 401');
    ok(!$r->exists(rl_key('ph', $u)), 'neither charged');

    my $res = get('/any/', 'X-User' => $u, 'X-Token' => 'good');
    is($res->code, 200, 'satisfy any, auth_request granting: 200');
    is($res->headers->header('X-Limit'), 'PASSED', 'and limited');
    is(charged('ph', $u), 1, 'charged once');
};

subtest 'limit_req rejects first, in either phase' => sub {
    my $u = user();
    is(get('/rl-pre/', 'X-User' => $u)->code, 200, 'preaccess: passes');
    is(get('/rl-pre/', 'X-User' => $u)->code, 503, 'limit_req: 503');
    is(charged('ph', $u), 1, 'preaccess: the 503 was not charged');

    $u = user();
    is(get('/rl-post/', 'X-User' => $u)->code, 200, 'precontent: passes');
    for (1 .. 3) {
        is(get('/rl-post/', 'X-User' => $u)->code, 503, 'limit_req: 503');
    }
    is(charged('ph', $u), 1, 'precontent: only the admitted request');
};

subtest 'precontent: a variable of auth_request_set as the key' => sub {
    my $u = user();
    my $res = get('/set/', 'X-User' => $u, 'X-Token' => 'good');
    is($res->code, 200, 'passes');
    is($res->headers->header('X-Limit'), 'PASSED', 'limited');
    is(charged('ia', "id-$u"), 1, 'keyed on the authorizer\'s X-Id');

    $res = get('/set/', 'X-User' => $u, 'X-Token' => 'forged');
    is($res->code, 401, 'a forged token: 401');
    is(charged('ia', "id-$u"), 1, 'not charged');

    $u = user();
    $res = get('/set-pre/', 'X-User' => $u, 'X-Token' => 'good');
    is($res->code, 200, 'preaccess: passes');
    is($res->headers->header('X-Limit') // '', '',
       'preaccess: the variable is still empty, nothing limited');
    ok(!$r->exists(rl_key('ia', "id-$u")), 'no key');
};

subtest 'once per request across try_files, either phase' => sub {
    my $u = user();
    for (1 .. 2) {
        is(get('/redir/', 'X-User' => $u)->code, 200,
           'try_files to a precontent location: 200');
    }
    is(charged('ph', $u), 2, 'each request charged once');

    $u = user();
    for (1 .. 2) {
        is(get('/redir-pre/', 'X-User' => $u)->code, 200,
           'try_files to a preaccess location: 200');
    }
    is(charged('ph', $u), 2, 'each request charged once');
};

subtest 'precontent: rejection, error_page, dry run' => sub {
    my $u = user();
    for (1 .. 2) {
        is(get('/small/', 'X-User' => $u, 'X-Token' => 'good')->code, 200,
           'within the burst');
    }
    my $tat = $r->get(rl_key('small', $u));
    my $res = get('/small/', 'X-User' => $u, 'X-Token' => 'good');
    is($res->code, 429, 'the third is rejected');
    like($res->body, qr/^limited$/, 'by error_page\'s location')
        or diag($res->body);
    is($res->headers->header('X-Limit'), 'REJECTED', 'REJECTED');
    ok(!$r->exists(rl_key('ph', $u)),
       'that location (its zone ph, preaccess) did not count it again');
    like($res->headers->header('Retry-After') // '', qr/^\d+$/,
         'Retry-After');
    is($r->get(rl_key('small', $u)), $tat, 'a rejection wrote nothing');

    $u = user();
    for my $i (1 .. 3) {
        $res = get('/dry/', 'X-User' => $u, 'X-Token' => 'good');
        is($res->code, 200, "dry run: request $i passes");
        is($res->headers->header('X-Limit'),
           $i < 3 ? 'PASSED' : 'REJECTED_DRY_RUN', 'and says so');
    }
    is(get('/dry/', 'X-User' => $u, 'X-Token' => 'forged')->code, 401,
       'dry run: a forged token is refused');
    is(charged('small', $u), 2, 'the dry rejection and the 401 not charged');
};

subtest 'a linegate_api location, its JSON rejection' => sub {
  for my $path ('/api-limited-pre/x', '/api-limited/x') {
    my $u = user();
    for (1 .. 2) {
        my $res = get($path, 'X-User' => $u);
        isnt($res->code, 429, 'within the burst: the API answers');
        like($res->headers->header('RateLimit') // '', qr/^"small";r=/,
             'RateLimit');
    }
    my $res = get($path, 'X-User' => $u);
    is($res->code, 429, "$path: the third is rejected");
    like($res->headers->content_type // '', qr{^application/json},
         "$path: in the API's JSON") or diag($res->body);
    like($res->headers->header('Retry-After') // '', qr/^\d+$/,
         'Retry-After');
  }
};

subtest 'nginx -t: linegate_limit_phase values' => sub {
    my $base = $s->render;
    my @cases = (
        ['bad phase', 'linegate_limit_phase access;',
         qr/invalid value "access" in "linegate_limit_phase" directive,(?x)
            \ it\ must\ be\ "preaccess"\ or\ "precontent"/],
        ['duplicate phase', "linegate_limit_phase precontent;\n"
             . 'linegate_limit_phase preaccess;',
         qr/"linegate_limit_phase" directive is duplicate/],
    );
    for my $c (@cases) {
        my ($name, $extra, $re) = @$c;
        (my $conf = $base) =~ s/^(\s*linegate_workspace_rate.*)$/$1\n$extra/m;
        my ($rc, $out) = $s->nginx_t($conf);
        isnt($rc, 0, "$name: nginx -t fails");
        like($out, $re, "$name: names the value") or diag($out);
    }
};

done_testing;
