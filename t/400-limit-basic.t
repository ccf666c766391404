# linegate_limit on one node: burst and refill edges, Retry-After exactness,
# RateLimit-Policy / RateLimit headers, dry run, status, headers off,
# inheritance, several zones per location (all must pass, refunds), empty
# keys, internal redirects, and answers produced by proxy_pass, static
# files and return; one line of each field where the answer has its own,
# also after a 416's error_page; Retry-After only on a refusal's answer.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use POSIX ();
use LG::Stack;
use LG::Test ();
use LG::Limit qw(backend redis_now_us rl_key);
use LG::Provision;

my $dir = LG::Test::public_dir('file.txt' => "static file\n",
                               'limited.txt' => 'limited');
my $backend_log = "$dir/backend.log";
my ($bpid, $bport) = backend($backend_log);
END { kill 'TERM', $bpid if $bpid }

my $http = <<"CONF";
    linegate_limit_zone b key=\$arg_k rate=1r/h burst=2;
    linegate_limit_zone e key=\$arg_k rate=1r/h;
    linegate_limit_zone s key=\$arg_k rate=1r/h;
    linegate_limit_zone d key=\$arg_k rate=10r/d burst=9;
    linegate_limit_zone srv key=\$arg_k rate=1r/h burst=1;
    linegate_limit_zone long key=\$http_x_long rate=1r/h;
    linegate_limit_zone hk key=\$http_x_key rate=1r/h;
    linegate_limit_zone m0 key=\$arg_a rate=1r/h;
    linegate_limit_zone m1 key=\$arg_b rate=1r/h;
    linegate_limit_zone m2 key=\$arg_c rate=1r/h;
CONF

my $server = <<"CONF";
        location /b/ {
            linegate_limit zone=b;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
        }
        location /e/ {
            linegate_limit zone=e;
            root $dir; try_files /file.txt =404;
        }
        location /dry/ {
            linegate_limit zone=b;
            linegate_limit_dry_run on;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
        }
        location /status/ {
            linegate_limit zone=e;
            linegate_limit_status 503;
            root $dir; try_files /file.txt =404;
        }
        location /noheaders/ {
            linegate_limit zone=e;
            linegate_limit_headers off;
            root $dir; try_files /file.txt =404;
        }
        location /two/ {
            linegate_limit zone=s;
            linegate_limit zone=d;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
        }
        location /masters/ {
            linegate_limit zone=m0;
            linegate_limit zone=m1;
            linegate_limit zone=m2;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
        }
        location /proxy/ {
            linegate_limit zone=e;
            proxy_pass http://127.0.0.1:$bport;
        }
        location /files/ {
            linegate_limit zone=e;
            alias $dir/;
        }
        location /long/ {
            linegate_limit zone=long;
            root $dir; try_files /file.txt =404;
        }
        location /json/ {
            linegate_limit zone=e;
            error_page 429 = \@limited;
            root $dir; try_files /file.txt =404;
        }
        location \@limited {
            default_type application/json;
            return 429 '{"error":"rate_limited"}';
        }
        location /redirect/ {
            linegate_limit zone=e;
            error_page 429 = /limited/;
            root $dir; try_files /file.txt =404;
        }
        location /emptyfirst/ {
            linegate_limit zone=hk;
            try_files /nothing \@bykey;
        }
        location \@bykey {
            linegate_limit zone=e;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /file.txt =404;
        }
        location /limited/ {
            linegate_limit zone=e;
            add_header X-Limit \$linegate_limit_status always;
            root $dir; try_files /limited.txt =404;
        }
        location /bpage/ {
            linegate_limit zone=e;
            error_page 429 = \@bpage;
            root $dir; try_files /file.txt =404;
        }
        location \@bpage {
            proxy_pass http://127.0.0.1:\@PPORT\@;
        }
        location /bproxy/ {
            linegate_limit zone=e;
            proxy_pass http://127.0.0.1:\@PPORT\@;
        }
        location /precond/ {
            linegate_limit zone=e;
            error_page 412 = \@precond;
            alias $dir/;
        }
        location \@precond {
            add_header X-Limit \$linegate_limit_status always;
            return 412 'precondition failed';
        }
        location /bpage-uri/ {
            linegate_limit zone=e;
            error_page 429 /bpage-to/;
            root $dir; try_files /file.txt =404;
        }
        location /bpage-to/ {
            proxy_pass http://127.0.0.1:\@PPORT\@;
        }
        location /range416/ {
            linegate_limit zone=e;
            error_page 416 \@range416;
            alias $dir/;
        }
        location \@range416 {
            proxy_pass http://127.0.0.1:\@PPORT\@;
        }
        location /fallback/ {
            linegate_limit zone=e;
            error_page 429 =200 /limited/;
            root $dir; try_files /file.txt =404;
        }
        location /fallback-proxy/ {
            linegate_limit zone=e;
            error_page 429 =200 \@bpage;
            root $dir; try_files /file.txt =404;
        }
        location /away/ {
            linegate_limit zone=e;
            error_page 429 http://status.example.com/;
            root $dir; try_files /file.txt =404;
        }
        location /forbid/ {
            linegate_limit zone=e;
            linegate_limit_status 403;
            root $dir; try_files /file.txt =404;
        }
        location = /limited-limits {
            linegate_limit zone=e;
            linegate_api account_limits;
        }
CONF

# a backend answering with fields of the limiter's names: a 429 page
# (behind error_page 429 = \@bpage) and a 200
my $pages = <<"CONF";
    server {
        listen 127.0.0.1:\@PPORT\@;
        add_header Retry-After 99 always;
        add_header RateLimit-Policy '"b";q=5;w=60' always;
        add_header RateLimit '"b";r=3;t=7' always;
        location /bpage/ { return 429 'backend page'; }
        location /bproxy/ { return 200 'backend ok'; }
        location /bpage-to/ { return 200 'backend page'; }
        location /range416/ { return 200 'backend 416 page'; }
        location /fallback-proxy/ { return 200 'backend fallback'; }
    }
CONF

my $inherit = <<"CONF";
    server {
        listen 127.0.0.1:\@IPORT\@;
        linegate_limit zone=srv;
        location /inherit/ { root $dir; try_files /file.txt =404; }
        location /own/ { linegate_limit zone=e; root $dir; try_files /file.txt =404; }
        location /none/ { linegate_limit_dry_run on; root $dir; try_files /file.txt =404; }
        location /named/ { try_files /nothing \@named; }
        location \@named { root $dir; try_files /file.txt =404; }
    }
CONF

my ($iport, $pport) = map {
    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                     LocalPort => 0, Listen => 1);
    my $p = $sock->sockport;
    close $sock;
    $p;
} 1 .. 2;
$inherit =~ s/\@IPORT\@/$iport/;
s/\@PPORT\@/$pport/g for $pages, $server;

my $s = LG::Stack->new(stub => 0, HTTP_EXTRA => $http . $inherit . $pages,
                       SERVER_EXTRA => $server)->start;
my $r = $s->redis;
my $ua = $s->ua;
my $n = 0;

sub key { return 'k' . ++$n . '_' . $$ }

sub get {
    my ($path, %h) = @_;
    return $ua->get($s->url($path) => \%h)->res;
}

# b: q=1 per hour, and a burst of 2 on top: 3 pass at once, yet r never
# says more than q (the draft's r is what is left of q: a client that
# reads q - r as its use must never get a negative number)
subtest 'burst then rejection, headers on each answer' => sub {
    my $k = key();
    for my $i (1 .. 3) {
        my $res = get("/b/?k=$k");
        my $left = 3 - $i > 1 ? 1 : 3 - $i;
        is($res->code, 200, "request $i passes");
        is($res->headers->header('X-Limit'), 'PASSED', "request $i PASSED");
        is($res->headers->header('RateLimit-Policy'), '"b";q=1;w=3600',
           "request $i: RateLimit-Policy");
        like($res->headers->header('RateLimit') // '',
             qr/^"b";r=$left;t=\d+$/,
             "request $i: RateLimit, r at most q ($left)");
        is($res->headers->header('Retry-After'), undef,
           "request $i: no Retry-After");
    }

    my $t0 = redis_now_us($r);
    my $res = get("/b/?k=$k");
    my $t1 = redis_now_us($r);
    is($res->code, 429, 'the 4th is rejected');
    is($res->headers->header('X-Limit'), 'REJECTED', 'REJECTED');
    like($res->headers->header('RateLimit') // '', qr/^"b";r=0;t=\d+$/,
         'RateLimit: nothing remaining');

    # exact: the key passes again at TAT - tau (tau = 2 intervals)
    my $tat = $r->get(rl_key('b', $k));
    my $allow_at = $tat - 2 * 3600e6;
    my $ra = $res->headers->header('Retry-After');
    ok($ra >= POSIX::ceil(($allow_at - $t1) / 1e6)
       && $ra <= POSIX::ceil(($allow_at - $t0) / 1e6),
       "Retry-After $ra is the time until the key passes again")
        or diag("tat $tat t0 $t0 t1 $t1");
    ok($ra > 3500 && $ra <= 3600, 'about one interval');

    my $ttl = $r->pttl(rl_key('b', $k));
    ok($ttl > 3 * 3600e3 - 60e3 && $ttl <= 3 * 3600e3 + 1,
       "the key expires when back to full ($ttl ms)");
};

# draft-ietf-httpapi-ratelimit-headers-10 and -11: t is the seconds until
# more quota is made available (r grows), not until the whole burst is
# back; 0 when r is already all it can say
subtest 'RateLimit t: until r grows, Retry-After when r is 0' => sub {
    my $k = key();
    my @t;
    for my $i (1 .. 3) {
        my $res = get("/b/?k=$k");
        is($res->code, 200, "request $i passes");
        my ($t) = ($res->headers->header('RateLimit') // '') =~ /;t=(\d+)$/;
        push @t, $t;
    }
    is($t[0], 0, 'r=1 is q: nothing more to come, t=0');
    is($t[1], 0, 'still r=1 (one of the burst left): t=0');
    is($t[2], 3600, 'r=0: one more in one interval, not the 3 to full');

    my $res = get("/b/?k=$k");
    is($res->code, 429, 'the 4th is rejected');
    my $ra = $res->headers->header('Retry-After');
    is($res->headers->header('RateLimit'), "\"b\";r=0;t=$ra",
       't is the Retry-After: when the next request passes');
};

subtest 'the Redis work of a decision: one SET for an idle key' => sub {
    my $calls = sub {
        my $cs = $r->info('commandstats');
        my %c = map { my ($n) = $cs->{$_} =~ /calls=(\d+)/; (s/^cmdstat_//r => $n) }
            keys %$cs;
        return \%c;
    };

    # a fresh key: the SET that admits also reads what it replaced; no
    # TIME (the worker's clock), no GET
    my $k = key();
    get("/e/?k=$k");    # the worker's script is loaded, its connection up
    $k = key();
    $r->config_resetstat;
    my $res = get("/e/?k=$k");
    my $c = $calls->();
    is($res->code, 200, 'admitted');
    is($c->{evalsha}, 1, 'one EVALSHA');
    is($c->{set}, 1, 'one SET inside it');
    is($c->{get} // 0, 0, 'no GET');
    is($c->{time} // 0, 0, 'no TIME: the worker gives the clock');

    # a busy key (TAT ahead, within the burst): SET ... GET, then the SET
    # of the TAT it read plus one interval
    $k = key();
    my $key = rl_key('b', $k);
    my $tat = redis_now_us($r) + 3600e6;
    $r->set($key, sprintf('%.0f', $tat), 'PX', 1e8);
    $r->config_resetstat;
    $res = get("/b/?k=$k");
    $c = $calls->();
    is($res->code, 200, 'busy key within its burst: admitted');
    is($r->get($key), sprintf('%.0f', $tat + 3600e6), 'TAT + one interval');
    is($c->{set}, 2, 'two SETs in the script')
        or diag(explain($c));
    is($c->{get} // 0, 0, 'no GET');
};

subtest 'refill edges, set through the stored arrival time' => sub {
    my $k = key();
    my $key = rl_key('e', $k);

    # tau = 0: a request passes iff TAT <= now
    my $now = redis_now_us($r);
    $r->set($key, sprintf('%.0f', $now + 5e6), 'PX', 60000);
    my $res = get("/e/?k=$k");
    is($res->code, 429, 'TAT 5 s ahead: rejected');
    my $ra = $res->headers->header('Retry-After');
    ok($ra >= 4 && $ra <= 5, "Retry-After $ra: the 5 s left, rounded up");
    is($r->get($key), sprintf('%.0f', $now + 5e6),
       'a rejection writes nothing');

    # (a new key: the worker remembers the rejection above for 5 s)
    $k = key();
    $key = rl_key('e', $k);
    $r->set($key, sprintf('%.0f', redis_now_us($r) - 1), 'PX', 60000);
    $res = get("/e/?k=$k");
    is($res->code, 200, 'TAT just passed: admitted');
    like($res->headers->header('RateLimit') // '', qr/^"e";r=0;t=3600$/,
         'a full interval until back to full');

    $res = get("/e/?k=$k");
    is($res->code, 429, 'and the next one is not');

    # burst 2 (tau = 2 T): passes while TAT - tau <= now
    $k = key();
    $key = rl_key('b', $k);
    $r->set($key, sprintf('%.0f', redis_now_us($r) + 2 * 3600e6), 'PX', 1e8);
    $res = get("/b/?k=$k");
    is($res->code, 200, 'burst: TAT at most tau ahead: passes');
    like($res->headers->header('RateLimit') // '', qr/^"b";r=0;t=3600$/,
         'the last of the burst: one more in an interval (not the 3 to '
         . 'full)');
    $k = key();
    $key = rl_key('b', $k);
    $r->set($key, sprintf('%.0f', redis_now_us($r) + 2 * 3600e6 + 3e6),
            'PX', 1e8);
    $res = get("/b/?k=$k");
    is($res->code, 429, 'burst: TAT 3 s beyond tau: rejected');
    ok($res->headers->header('Retry-After') >= 2
       && $res->headers->header('Retry-After') <= 3, 'in 3 s');
};

subtest 'empty key is not limited' => sub {
    for (1 .. 5) {
        my $res = get('/b/');
        is($res->code, 200, 'no key: passes');
        is($res->headers->header('RateLimit-Policy'), undef, 'no headers');
        is($res->headers->header('X-Limit'), undef, 'no status');
    }
    is(scalar(() = $r->keys('lg:rl:{b:v:}*')), 0, 'no Redis key');
};

subtest 'an empty key leaves the decision to a location redirected to' => sub {
    # as with limit_req: a location none of whose zones applied has not
    # decided, so the named location try_files leads to limits the request
    my $k = key();
    my $res = get("/emptyfirst/?k=$k");
    is($res->code, 200, 'first passes');
    is($res->headers->header('X-Limit'), 'PASSED', 'decided by zone e');
    $res = get("/emptyfirst/?k=$k");
    is($res->code, 429, 'second rejected by the named location\'s zone');
    is($res->headers->header('X-Limit'), 'REJECTED', 'status REJECTED');
    is(scalar(() = $r->keys('lg:rl:{hk:*')), 0, 'no key of zone hk');
    # with a key the first location decides, once: the named location's
    # zone is not asked (its own key for this value stays unset)
    my $k2 = key();
    $res = get("/emptyfirst/?k=$k2", 'X-Key' => $k2);
    is($res->code, 200, 'a keyed first location passes');
    is($r->exists(rl_key('e', $k2)), 0, 'zone e not asked after it');
};

subtest 'every value is hashed into the Redis key' => sub {
    my $long = 'x' x 200;
    is(get('/long/', 'X-Long' => $long)->code, 200, 'first passes');
    is(get('/long/', 'X-Long' => $long)->code, 429, 'second rejected');
    my @k = $r->keys('lg:rl:{long:*');
    is(scalar @k, 1, 'one key');
    like($k[0], qr/^lg:rl:\{long:h:[0-9a-f]{32}\}$/, 'hashed: ' . $k[0]);
    is($k[0], rl_key('long', $long), 'the MD5 hex of the value');
    is(get('/long/', 'X-Long' => 'a{b}c')->code, 200, 'braces: passes');
    ok(scalar(grep { /\{long:v:/ } $r->keys('lg:rl:{long:*')) == 0,
       'a value with braces is hashed too');
};

# key=$http_x_api_key (docs/gateway.md): a client's API key is a secret,
# never in Redis in the clear: not in a key name (SCAN, the RDB, the
# replicas), nor in what MONITOR and SLOWLOG show of the EVALSHA
subtest 'a short API key is not in Redis in the clear' => sub {
    my $api = join '', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 32;
    my ($cmds) = $s->redis_traffic(sub {
        is(get('/long/', 'X-Long' => $api)->code, 200, 'passes');
    });
    ok(scalar(grep { /EVALSHA/i } @$cmds), 'the EVALSHA was seen');
    is(scalar(grep { index($_, $api) >= 0 } @$cmds), 0,
       'not in MONITOR\'s commands');
    my @names = $r->keys('*');    # SCAN's names (every master's)
    ok(scalar @names, 'KEYS sees keys');
    is(scalar(grep { index($_, $api) >= 0 } @names), 0,
       'in no key name');
    is($r->exists(rl_key('long', $api)), 1, 'its key: the MD5 of it');
};

subtest 'dry run: counted, never rejected' => sub {
    my $k = key();
    for my $i (1 .. 3) {
        is(get("/dry/?k=$k")->headers->header('X-Limit'), 'PASSED',
           "request $i PASSED");
    }
    for my $i (4 .. 5) {
        my $res = get("/dry/?k=$k");
        is($res->code, 200, "request $i passes");
        is($res->headers->header('X-Limit'), 'REJECTED_DRY_RUN',
           "request $i REJECTED_DRY_RUN");
        is($res->headers->header('Retry-After'), undef, 'no Retry-After');
    }
};

subtest 'linegate_limit_status and linegate_limit_headers off' => sub {
    my $k = key();
    is(get("/status/?k=$k")->code, 200, 'first passes');
    my $res = get("/status/?k=$k");
    is($res->code, 503, 'rejected with the configured status');
    ok($res->headers->header('Retry-After'), 'with Retry-After');

    $k = key();
    $res = get("/noheaders/?k=$k");
    is($res->code, 200, 'passes');
    is($res->headers->header('RateLimit-Policy'), undef, 'no policy');
    is($res->headers->header('RateLimit'), undef, 'no state');
    $res = get("/noheaders/?k=$k");
    is($res->code, 429, 'rejected');
    ok($res->headers->header('Retry-After'), 'Retry-After still sent');
};

subtest 'several zones: all must pass, a rejection refunds the others' => sub {
    my $k = key();
    my $res = get("/two/?k=$k");
    is($res->code, 200, 'first passes both');
    is($res->headers->header('RateLimit-Policy'),
       '"s";q=1;w=3600, "d";q=10;w=86400', 'one policy per zone');
    like($res->headers->header('RateLimit') // '',
         qr/^"s";r=0;t=\d+, "d";r=9;t=\d+$/, 'one state per zone');

    for (1 .. 3) {
        $res = get("/two/?k=$k");
        is($res->code, 429, 'zone s rejects');
    }
    # the refunds are fire and forget: wait for them to land
    my $d;
    for (1 .. 50) {
        $d = $r->get(rl_key('d', $k));
        last if $d - redis_now_us($r) < 8640e6 * 1.5;
        select undef, undef, undef, 0.05;
    }
    ok($d - redis_now_us($r) <= 8640e6,
       'zone d charged once, not for the rejected requests');

};

subtest 'headers reach proxy_pass, static files and internal redirects' => sub {
    my $k = key();
    my $res = get("/proxy/x?k=$k");
    is($res->code, 200, 'proxied');
    is($res->body, "backend /proxy/x?k=$k", 'the backend answered');
    is($res->headers->header('X-Backend'), '1', 'backend header');
    is($res->headers->header('RateLimit-Policy'), '"e";q=1;w=3600',
       'RateLimit-Policy on a proxied answer');
    like($res->headers->header('RateLimit') // '', qr/^"e";r=0;/,
         'RateLimit on a proxied answer');
    $res = get("/proxy/y?k=$k");
    is($res->code, 429, 'second rejected');
    open my $bl, '<', $backend_log or die;
    my @seen = grep { /k=\Q$k\E/ } <$bl>;
    is(scalar @seen, 1, 'the backend saw only the admitted request');

    $k = key();
    $res = get("/files/file.txt?k=$k");
    is($res->code, 200, 'static file');
    is($res->body, "static file\n", 'its content');
    is($res->headers->header('RateLimit-Policy'), '"e";q=1;w=3600',
       'headers on a static file');
    is(get("/files/file.txt?k=$k")->code, 429, 'static: second rejected');

    $k = key();
    is(get("/redirect/?k=$k")->code, 200, 'redirect: first passes');
    $res = get("/redirect/?k=$k");
    is($res->code, 200, 'rejected, error_page answers');
    is($res->body, 'limited', 'from the error_page location');
    is($res->headers->header('X-Limit'), 'REJECTED',
       'counted once: the error_page location does not count again');
    # error_page 429 = /uri takes that location's status: a 200 here,
    # which served the request (RFC 9110 10.2.3)
    is($res->headers->header('Retry-After'), undef,
       'no Retry-After on the 200 it answers');
    like($res->headers->header('RateLimit') // '', qr/^"e";r=0;t=\d+$/,
         'RateLimit kept');
};

# every method counts, as with limit_req: a HEAD, an OPTIONS (a CORS
# preflight) are requests of the key (docs/gateway.md: exempting them)
subtest 'HEAD and OPTIONS are counted like any request' => sub {
    my $k = key();
    my $res = $ua->head($s->url("/b/?k=$k"))->res;
    is($res->code, 200, 'HEAD passes');
    like($res->headers->header('RateLimit') // '', qr/^"b";r=1;/,
         'HEAD: RateLimit');
    $res = $ua->options($s->url("/b/?k=$k"))->res;
    isnt($res->code, 429, 'OPTIONS passes');
    is($res->headers->header('X-Limit'), 'PASSED', 'OPTIONS decided');
    is(get("/b/?k=$k")->code, 200, 'the third of the burst');
    $res = $ua->head($s->url("/b/?k=$k"))->res;
    is($res->code, 429, 'then HEAD is rejected');
    ok($res->headers->header('Retry-After'), 'with its Retry-After');
};

# docs/gateway.md's recipe: a JSON body for the 429
subtest 'error_page gives the rejection another body' => sub {
    my $k = key();
    is(get("/json/?k=$k")->code, 200, 'first passes');
    my $res = get("/json/?k=$k");
    is($res->code, 429, 'rejected');
    is($res->body, '{"error":"rate_limited"}', 'the body error_page gave');
    is($res->headers->content_type, 'application/json', 'its type');
    ok($res->headers->header('Retry-After'), 'Retry-After kept');
    like($res->headers->header('RateLimit') // '', qr/^"e";r=0;t=\d+$/,
         'RateLimit kept');
};

# an answer with fields of the limiter's names: one line of each; the
# backend's RateLimit-Policy and RateLimit items first in the limiter's
# line, Retry-After the limiter's on its refusal, else the backend's
# (docs/directives.md, linegate_limit_headers)
subtest 'the answer has its own Retry-After and RateLimit fields' => sub {
    my $k = key();
    my $res = get("/bproxy/?k=$k");
    is($res->code, 200, 'passed, proxied');
    is($res->body, 'backend ok', 'the backend answered');
    is_deeply($res->headers->every_header('Retry-After'), ['99'],
              "the backend's Retry-After: the limiter refused nothing");
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"b";q=5;w=60, "e";q=1;w=3600'],
              'one RateLimit-Policy: the backend\'s, then the limiter\'s');
    my $rl = $res->headers->every_header('RateLimit');
    is(scalar @$rl, 1, 'one RateLimit') or diag(explain $rl);
    like($rl->[0] // '', qr/^"b";r=3;t=7, "e";r=0;t=\d+$/, 'both');

    $k = key();
    is(get("/bpage/?k=$k")->code, 200, 'error_page location: first passes');
    $res = get("/bpage/?k=$k");
    is($res->code, 429, 'rejected: the backend answers the 429');
    is($res->body, 'backend page', 'its page');
    my $ra = $res->headers->every_header('Retry-After');
    is(scalar @$ra, 1, 'one Retry-After') or diag(explain $ra);
    ok(($ra->[0] // 0) > 3000 && $ra->[0] <= 3600,
       "the limiter's: when the key passes") or diag(explain $ra);
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"b";q=5;w=60, "e";q=1;w=3600'], 'one RateLimit-Policy');
    $rl = $res->headers->every_header('RateLimit');
    is(scalar @$rl, 1, 'one RateLimit') or diag(explain $rl);
    like($rl->[0] // '', qr/^"b";r=3;t=7, "e";r=0;t=\d+$/, 'both');
};

# a filter that refuses the answer after the limiter's header filter ran
# (not_modified's 412 here, image_filter's 415 alike) clears its headers
# and the modules' contexts and sends the error page through every header
# filter again: the fields are there once, also after an error_page's
# internal redirect; a range filter's 416 keeps the headers and is sent
# the same way
subtest 'headers of an answer sent through the filters again' => sub {
    # nginx closes the connection after a 412 a filter made (its
    # ngx_http_filter_finalize_request() ends the request with NGX_ERROR):
    # the next request, sent on that kept connection, got no answer now
    # and then; in this subtest no connection is kept
    my $keep = $ua->max_connections;
    $ua->max_connections(0);
    my $k = key();
    my $res = get("/files/file.txt?k=$k", 'If-Match' => '"nope"');
    is($res->code, 412, 'If-Match fails: 412');
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"e";q=1;w=3600'], 'RateLimit-Policy, once');
    my $rl = $res->headers->every_header('RateLimit');
    is(scalar @$rl, 1, 'RateLimit, once') or diag(explain $rl);
    like($rl->[0] // '', qr/^"e";r=0;t=\d+$/, 'its state');
    $res = get("/files/file.txt?k=$k");
    is($res->code, 429, 'the 412 was counted');
    is(scalar @{ $res->headers->every_header('Retry-After') }, 1,
       'one Retry-After');

    $k = key();
    $res = get("/precond/file.txt?k=$k",
               'If-Unmodified-Since' => 'Thu, 01 Jan 1970 00:00:01 GMT');
    is($res->code, 412, 'If-Unmodified-Since fails: 412');
    is($res->body, 'precondition failed', 'error_page 412 = \@precond');
    is($res->headers->header('X-Limit'), 'PASSED', 'counted once');
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"e";q=1;w=3600'], 'RateLimit-Policy, once');
    is(scalar @{ $res->headers->every_header('RateLimit') }, 1,
       'RateLimit, once');

    $k = key();
    $res = get("/files/file.txt?k=$k", Range => 'bytes=1000-');
    is($res->code, 416, 'a range past the end: 416');
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"e";q=1;w=3600'], 'RateLimit-Policy, once');
    is(scalar @{ $res->headers->every_header('RateLimit') }, 1,
       'RateLimit, once');
    $ua->max_connections($keep);
};

# error_page 429 /uri (no =): the refusal's status stays, whatever the
# location it leads to answers; its backend's fields as behind a named
# location: one line of each
subtest 'error_page 429 /uri to a backend with its own fields' => sub {
    my $k = key();
    is(get("/bpage-uri/?k=$k")->code, 200, 'first passes');
    my $res = get("/bpage-uri/?k=$k");
    is($res->code, 429, 'rejected: the 429 stays');
    is($res->body, 'backend page', "the backend's page");
    my $ra = $res->headers->every_header('Retry-After');
    is(scalar @$ra, 1, 'one Retry-After') or diag(explain $ra);
    ok(($ra->[0] // 0) > 3000, "the limiter's") or diag(explain $ra);
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"b";q=5;w=60, "e";q=1;w=3600'], 'one RateLimit-Policy');
    my $rl = $res->headers->every_header('RateLimit');
    is(scalar @$rl, 1, 'one RateLimit') or diag(explain $rl);
};

# a range filter's 416 keeps the headers, the limiter's lines among them,
# and error_page 416 leads to a backend that sends fields of its own:
# still one line of each, the backend's items first; the limiter refused
# nothing, so the backend's Retry-After is the one
subtest 'a 416 through error_page to a backend with its own fields' => sub {
    my $k = key();
    my $res = get("/range416/file.txt?k=$k", Range => 'bytes=1000-');
    is($res->code, 416, 'a range past the end: 416');
    is($res->body, 'backend 416 page', 'error_page 416 = the backend');
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"b";q=5;w=60, "e";q=1;w=3600'],
              'one RateLimit-Policy: the backend\'s, then the limiter\'s');
    my $rl = $res->headers->every_header('RateLimit');
    is(scalar @$rl, 1, 'one RateLimit') or diag(explain $rl);
    like($rl->[0] // '', qr/^"b";r=3;t=7, "e";r=0;t=\d+$/, 'both');
    is_deeply($res->headers->every_header('Retry-After'), ['99'],
              "the backend's Retry-After: the limiter refused nothing");
    is(get("/range416/file.txt?k=$k")->code, 429, 'the 416 was counted');
};

# Retry-After belongs with a refusal (RFC 9110 10.2.3: a 503 or a 3xx;
# RFC 6585: a 429): an error_page that serves the refused request
# (error_page 429 =200) sends the RateLimit fields without it; a
# redirect (3xx) and the location's own linegate_limit_status keep it
subtest 'Retry-After only where the answer is a refusal' => sub {
    my $k = key();
    is(get("/fallback/?k=$k")->code, 200, 'first passes');
    my $res = get("/fallback/?k=$k");
    is($res->code, 200, 'rejected, error_page 429 =200 serves it');
    is($res->body, 'limited', 'from the fallback location');
    is($res->headers->header('X-Limit'), 'REJECTED', 'a rejection');
    is_deeply($res->headers->every_header('Retry-After'), [],
              'no Retry-After on a 200');
    is_deeply($res->headers->every_header('RateLimit-Policy'),
              ['"e";q=1;w=3600'], 'RateLimit-Policy');
    like($res->headers->header('RateLimit') // '', qr/^"e";r=0;t=\d+$/,
         'RateLimit: nothing remaining');

    $k = key();
    is(get("/fallback-proxy/?k=$k")->code, 200, 'proxied fallback: first');
    $res = get("/fallback-proxy/?k=$k");
    is($res->code, 200, 'rejected, error_page 429 =200 @backend');
    is($res->body, 'backend fallback', "the backend's answer");
    is_deeply($res->headers->every_header('Retry-After'), ['99'],
              "the backend's own Retry-After, the limiter's not sent");
    my $rl = $res->headers->every_header('RateLimit');
    is(scalar @$rl, 1, 'one RateLimit') or diag(explain $rl);
    like($rl->[0] // '', qr/^"b";r=3;t=7, "e";r=0;t=\d+$/, 'both');

    $k = key();
    is(get("/away/?k=$k")->code, 200, 'redirecting location: first');
    $res = get("/away/?k=$k");
    is($res->code, 302, 'rejected, error_page 429 http://...: a 302');
    is($res->headers->location, 'http://status.example.com/', 'Location');
    my $ra = $res->headers->every_header('Retry-After');
    is(scalar @$ra, 1, 'a 3xx keeps Retry-After') or diag(explain $ra);
    ok(($ra->[0] // 0) > 3000, 'the limiter\'s');

    $k = key();
    is(get("/forbid/?k=$k")->code, 200, 'linegate_limit_status 403: first');
    $res = get("/forbid/?k=$k");
    is($res->code, 403, 'rejected with 403');
    ok($res->headers->header('Retry-After'),
       'the refusal\'s own status keeps Retry-After');
};

# linegate's own APIs in a limited location send fields of their own (an
# account's daily and monthly purchases here) under names that are string
# literals of the module, which the linker makes one with equal text
# elsewhere in it: the limiter tells its own lines by names of its own
subtest "an API's own RateLimit fields in a limited location" => sub {
    my $p = LG::Provision->new($s);
    my $a = $p->account('acct_rl400', no_stub_customer => 1);
    my $k = key();
    my $res = get("/limited-limits?k=$k", %{ $p->headers($a) });
    is($res->code, 200, 'the limits, admitted');
    my $pol = $res->headers->every_header('RateLimit-Policy');
    is(scalar @$pol, 1, 'one RateLimit-Policy') or diag(explain $pol);
    my $api = qr/"daily";q=\d+;w=86400, "monthly";q=\d+;w=2592000/;
    like($pol->[0] // '', qr/^$api, "e";q=1;w=3600$/,
         "the API's policies, then the limiter's");
    my $rl = $res->headers->every_header('RateLimit');
    is(scalar @$rl, 1, 'one RateLimit') or diag(explain $rl);
    like($rl->[0] // '',
         qr/^"daily";r=\d+;t=\d+, "monthly";r=\d+;t=\d+, "e";r=0;t=\d+$/,
         'both states');
    $res = get("/limited-limits?k=$k", %{ $p->headers($a) });
    is($res->code, 429, 'the second refused');
    is(scalar @{ $res->headers->every_header('Retry-After') }, 1,
       'one Retry-After');
};

subtest 'inheritance like limit_req' => sub {
    my $base = "http://127.0.0.1:$iport";
    my $k = key();
    my @c = map { $ua->get("$base/inherit/?k=$k")->res->code } 1 .. 3;
    is_deeply(\@c, [200, 200, 429], 'server-level zone (burst 1) applies');
    like($ua->get("$base/none/?k=$k")->res->headers
         ->header('RateLimit-Policy') // '', qr/"srv"/,
         'a location with other directives but no linegate_limit inherits');

    # try_files to a named location clears the module contexts without
    # an internal redirect: still counted once, headers still sent
    $k = key();
    my $res = $ua->get("$base/named/?k=$k")->res;
    is($res->code, 200, 'named location: first passes');
    like($res->headers->header('RateLimit') // '', qr/^"srv";r=1;/,
         'counted once (burst 1: one left), headers on the answer');
    is($ua->get("$base/named/?k=$k")->res->code, 200, 'second passes');
    is($ua->get("$base/named/?k=$k")->res->code, 429, 'third rejected');

    $k = key();
    $res = $ua->get("$base/own/?k=$k")->res;
    is($res->headers->header('RateLimit-Policy'), '"e";q=1;w=3600',
       'a location with its own list does not inherit');
    is($ua->get("$base/own/?k=$k")->res->code, 429, 'its own zone applies');
};

subtest 'SCRIPT FLUSH: one zone sends its script again' => sub {
    $r->script_flush;
    my $k = key();
    my $res = get("/e/?k=$k");
    is($res->code, 200, 'admitted');
    like($res->headers->header('RateLimit') // '', qr/^"e";r=0;/,
         'decided by Redis, not a fallback');
    is(get("/e/?k=$k")->code, 429, 'and counted');
};

subtest 'SCRIPT FLUSH: several zones fall back once, then Redis again' => sub {
    $r->script_flush;
    my @st;
    for (1 .. 20) {
        my $res = get('/two/?k=' . key());
        push @st, $res->headers->header('X-Limit');
        last if $st[-1] eq 'PASSED';
        select undef, undef, undef, 0.2;
    }
    is($st[-1], 'PASSED', "Redis decides again after "
                          . scalar(@st) . " requests (@st)");
    ok(@st <= 3, 'within a request per worker or so');
};

# On a cluster a flush (or a failover: a promoted replica's cache is
# empty) empties every master's cache: the NOSCRIPT of one pipeline must
# bring the scripts back on every master, not only on the node a keyless
# SCRIPT LOAD would reach (the first one). Zones m0..m2 have their keys on
# three masters; on one Redis the same check holds for its one cache.
subtest 'SCRIPT FLUSH of every master: Redis decides again on each' => sub {
    my @m = $s->topology eq 'cluster' ? $s->cluster_masters : ();
    # a value of zone m$i's key on the i-th master
    my $on = sub {
        my ($i) = @_;
        my $v = key();
        $v = key() while @m && $s->cluster_master_of(rl_key("m$i", $v))
                                != $m[$i];
        return $v;
    };
    my $query = sub {
        my @v = map { $on->($_) } 0 .. 2;
        return ("/masters/?a=$v[0]&b=$v[1]&c=$v[2]", @v);
    };

    $r->script_flush;
    my (@st, @v, $path);
    for (1 .. 10) {
        ($path, @v) = $query->();
        push @st, get($path)->headers->header('X-Limit') // '';
        last if $st[-1] eq 'PASSED';
        select undef, undef, undef, 0.2;
    }
    is($st[-1], 'PASSED', 'all three zones decided by Redis again after '
                          . scalar(@st) . " requests (@st)");
    ok(@st <= 3, 'within a request per worker or so');
    ok($r->exists(rl_key("m$_", $v[$_])), "zone m$_ counted by "
       . (@m ? "master $m[$_]" : 'Redis')) for 0 .. 2;
    my $res = get($path);
    is($res->code, 429, 'the same keys again: refused by the count');
    is($res->headers->header('X-Limit'), 'REJECTED', 'by Redis');
};

subtest 'unlimited locations are untouched' => sub {
    # like limit_req, "return" answers in the rewrite phase, before any
    # limit: the limited locations here serve a file
    my $res = get('/static');
    is($res->code, 200, 'return location');
    is($res->headers->header('RateLimit-Policy'), undef, 'no headers');
};

subtest 'configuration errors fail nginx -t, naming the value' => sub {
    my $base = $s->render;
    my @cases = (
        ['bad rate', 'linegate_limit_zone x key=$arg_k rate=10r/w;',
         qr/invalid rate "rate=10r\/w"/],
        ['zero rate', 'linegate_limit_zone x key=$arg_k rate=0r/s;',
         qr/invalid rate "rate=0r\/s"/],
        ['bad burst', 'linegate_limit_zone x key=$arg_k rate=1r/s burst=-1;',
         qr/invalid burst value "burst=-1"/],
        ['bad lease', 'linegate_limit_zone x key=$arg_k rate=1r/s lease=2s;',
         qr/invalid lease "lease=2s"/],
        ['constant key', 'linegate_limit_zone x key=abc rate=1r/s;',
         qr/key "abc" has no variables/],
        ['no rate', 'linegate_limit_zone x key=$arg_k;',
         qr/invalid number of arguments|needs key= and rate=/],
        ['bad name', 'linegate_limit_zone "a b" key=$arg_k rate=1r/s;',
         qr/invalid linegate_limit_zone name "a b"/],
        ['duplicate zone', "linegate_limit_zone x key=\$arg_k rate=1r/s;\n"
             . 'linegate_limit_zone x key=$arg_k rate=2r/s;',
         qr/duplicate linegate_limit_zone "x"/],
        ['unknown zone', 'linegate_limit zone=nosuch;',
         qr/zone "nosuch" is used in .* but never defined/],
        ['bad on_error', 'linegate_limit_on_error maybe;',
         qr/invalid value "maybe"/],
        ['share on closed', 'linegate_limit_on_error closed share=3;',
         qr/invalid parameter "share=3"/],
        ['bad share', 'linegate_limit_on_error local share=0;',
         qr/invalid share "share=0"/],
        ['bad status', 'linegate_limit_status 200;',
         qr/invalid linegate_limit_status "200"/],
        # T is whole microseconds: 750000r/s would be kept as 500000
        ['rate not kept', 'linegate_limit_zone x key=$arg_k rate=750000r/s;',
         qr/rate 750000 r\/s cannot be kept: .* 2 us is 500000 r\/s/],
        ['duplicate key=', 'linegate_limit_zone x key=$arg_k key=$arg_j '
             . 'rate=1r/s;', qr/duplicate "key=" parameter/],
        ['duplicate rate=', 'linegate_limit_zone x key=$arg_k rate=1r/s '
             . 'rate=5r/s;', qr/duplicate "rate=" parameter/],
        ['duplicate burst=', 'linegate_limit_zone x key=$arg_k rate=1r/s '
             . 'burst=1 burst=9;', qr/duplicate "burst=" parameter/],
        ['duplicate lease=', 'linegate_limit_zone x key=$arg_k rate=1r/s '
             . 'lease=10ms lease=20ms;', qr/duplicate "lease=" parameter/],
        ['bad log level', 'linegate_limit_log_level debug;',
         qr/invalid value "debug" in "linegate_limit_log_level" directive/],
        ['duplicate log level', "linegate_limit_log_level warn;\n"
             . 'linegate_limit_log_level info;',
         qr/"linegate_limit_log_level" directive is duplicate/],
    );
    for my $c (@cases) {
        my ($name, $extra, $re) = @$c;
        (my $conf = $base) =~ s/^(\s*linegate_workspace_rate.*)$/$1\n$extra/m;
        my ($rc, $out) = $s->nginx_t($conf);
        isnt($rc, 0, "$name: nginx -t fails");
        like($out, $re, "$name: names the value") or diag($out);
    }

    my $conf = "load_module $s->{module};\nevents {}\nhttp {\n"
        . "    linegate_limit_zone x key=\$arg_k rate=1r/s;\n"
        . "    server { listen 127.0.0.1:1; linegate_limit zone=x; }\n}\n";
    my ($rc, $out) = $s->nginx_t($conf);
    isnt($rc, 0, 'linegate_limit without linegate_redis fails');
    like($out, qr/"linegate_limit" needs "linegate_redis"/, 'says so');
};

# The API key cache is allocated whole when each worker starts, ~120 MB
# at its largest size: only the Lines and Provisioning APIs take keys,
# and an nginx serving linegate_limit alone allocated it too (before
# 2026-11-28). A worker's address space with the largest size and with
# the smallest, told apart.
subtest 'linegate_limit alone: no API key cache allocated' => sub {
    my $vm = sub {
        my ($size) = @_;
        my $st = LG::Stack->new(stub => 0, api => 0, WORKERS => 1,
            HTTP_EXTRA => "linegate_api_key_cache_size $size;\n"
                          . 'linegate_limit_zone z key=$remote_addr '
                          . "rate=1r/s;\n")->start;
        my ($w) = split ' ', `pgrep -P $st->{pids}{nginx}`;
        open my $fh, '<', "/proc/$w/status" or die "/proc/$w/status: $!";
        my ($kb) = map { /^VmSize:\s+(\d+)/ ? $1 : () } <$fh>;
        $st->stop;
        return $kb;
    };
    my $small = $vm->(2);
    my $large = $vm->(1048576);
    cmp_ok($large - $small, '<', 32 * 1024,
           'the same address space within 32 MB (1,048,576 entries '
           . 'take ~120 MB)') or diag("VmSize $small kB, then $large kB");
};

done_testing;
