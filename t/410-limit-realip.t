# The preaccess handler runs last in its phase: after realip's
# location-level handler (a key of $remote_addr or $binary_remote_addr is
# the client's address, not the proxy's, and $remote_addr is not cached
# with the proxy's for the rest of the request) and after limit_req and
# limit_conn (a request they reject is not charged). Before 2026-11-28 it
# ran first, being a dynamic module's handler pushed after the static
# ones. And a lease is used only in a location with one zone, not in one
# of several zones where only one applies (the others' keys empty).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use IO::Select;
use IO::Socket::INET;
use Socket qw(inet_aton);
use LG::Stack;
use LG::Test ();
use LG::Limit qw(rl_key evalsha_calls redis_now_us);

# realip is in Debian's and nginx.org's nginx, not in one built from
# source without --with-http_realip_module (the Makefile's matrix adds it)
my $nginx = $ENV{LG_NGINX} // '/usr/sbin/nginx';
plan skip_all => "$nginx has no realip module (--with-http_realip_module)"
    unless `$nginx -V 2>&1` =~ /--with-http_realip_module/;

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

# a backend that answers only when the test does: /lc/'s request held
# there, in flight, while a second one comes
my $backend = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => 0, Listen => 4)
    or die "listen: $!";
my $bport = $backend->sockport;

my $http = <<'CONF';
    linegate_limit_zone rb key=$binary_remote_addr rate=1r/h;
    linegate_limit_zone ra key=$remote_addr rate=1r/h;
    linegate_limit_zone ph key=$http_x_user rate=1r/h burst=9;
    limit_req_zone $http_x_user zone=lr:1m rate=1r/m;
    limit_conn_zone $http_x_user zone=lc:1m;
    linegate_limit_zone ls key=$arg_k rate=1000r/s burst=500 lease=1s;
    linegate_limit_zone hk key=$http_x_key rate=1000r/s burst=500;
CONF

my $realip = <<'CONF';
            set_real_ip_from 127.0.0.1;
            real_ip_header X-Real-IP;
            add_header X-Addr $remote_addr always;
            add_header X-Limit $linegate_limit_status always;
            try_files /file.txt =404;
CONF

my $server = <<"CONF";
        root $dir;
        location /bin/ {
            linegate_limit zone=rb;
$realip
        }
        location /addr/ {
            linegate_limit zone=ra;
$realip
        }
        location /rl/ {
            limit_req zone=lr;
            limit_req_status 503;
            linegate_limit zone=ph;
            try_files /file.txt =404;
        }
        location /lc/ {
            limit_conn lc 1;
            linegate_limit zone=ph;
            proxy_pass http://127.0.0.1:$bport;
        }
        location /one/ {
            linegate_limit zone=ls;
            try_files /file.txt =404;
        }
        location /two/ {
            linegate_limit zone=ls;
            linegate_limit zone=hk;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, WORKERS => 1, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $r = $s->redis;
my $ua = $s->ua;

# addresses of this run only: the keys live an hour
my $net = sprintf '10.%d.%d', ($$ >> 8) & 255, $$ & 255;

sub get {
    my ($path, %h) = @_;
    return $ua->get($s->url($path) => \%h)->res;
}

for my $c (['bin', 'rb', sub { inet_aton($_[0]) }],
           ['addr', 'ra', sub { $_[0] }]) {
    my ($loc, $zone, $key) = @$c;
    subtest "location-level realip, a zone keyed on /$loc/" => sub {
        for my $i (1 .. 3) {
            my $ip = "$net.$i";
            my $res = get("/$loc/", 'X-Real-IP' => $ip);
            is($res->code, 200, "$ip: its one request passes");
            is($res->headers->header('X-Limit'), 'PASSED', 'limited');
            is($res->headers->header('X-Addr'), $ip,
               '$remote_addr is the client\'s, not the proxy\'s');
            ok($r->exists(rl_key($zone, $key->($ip))),
               'keyed on the client\'s address');
        }
        my $res = get("/$loc/", 'X-Real-IP' => "$net.1");
        is($res->code, 429, "$net.1 again: rejected (1 an hour)");
        is($res->headers->header('X-Addr'), "$net.1", 'X-Addr on a 429');
        ok(!$r->exists(rl_key($zone, $key->('127.0.0.1'))),
           'the proxy\'s address is no key');
    };
}

subtest 'a request limit_req rejects is not charged' => sub {
    my $u = "u$$";
    my $res = get('/rl/', 'X-User' => $u);
    is($res->code, 200, 'the first passes both');
    is($res->headers->header('RateLimit-Policy'), '"ph";q=1;w=3600',
       'and linegate_limit');
    for (1 .. 3) {
        is(get('/rl/', 'X-User' => $u)->code, 503, 'limit_req: 503');
    }
    my $tat = $r->get(rl_key('ph', $u));
    ok(defined $tat, 'the key is there');
    # each admission of 1r/h puts the TAT an hour further: charged once,
    # it is less than an hour ahead; charged 4 times, over 3 hours
    my $ahead = $tat - redis_now_us($r);
    ok($ahead > 0 && $ahead <= 3600e6,
       'charged once: the 503s cost nothing') or diag("TAT +$ahead us");
};

# limit_conn 1: the first request of a key held at the backend (past
# the preaccess phase, limit_conn's count taken), a second one of the
# key meanwhile is rejected by limit_conn before linegate_limit asks
# Redis. Were linegate_limit's handler before limit_conn's, it would
# decide (an EVALSHA) and charge the key for a request limit_conn then
# refuses.
subtest 'a request limit_conn rejects is not decided' => sub {
    my $u = "c$$";
    my $first = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $s->port, Timeout => 10)
        or die "connect: $!";
    print $first "GET /lc/ HTTP/1.0\r\nHost: lc\r\nX-User: $u\r\n\r\n";
    my $held = IO::Select->new($backend)->can_read(10) && $backend->accept;
    ok($held, 'the first request is held at the backend') or return;

    my $before = evalsha_calls($r);
    my $res = get('/lc/', 'X-User' => $u);
    is($res->code, 503, 'a second one meanwhile: limit_conn\'s 503');
    is(evalsha_calls($r) - $before, 0,
       'linegate_limit asked Redis nothing for it');
    is($res->headers->header('RateLimit-Policy'), undef,
       'no RateLimit fields: nothing decided');

    print $held "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
    close $held;
    my $out = do { local $/; <$first> } // '';
    close $first;
    like($out, qr{^HTTP/1\.\d 200 }, 'the held one answered: 200');
    like($out, qr/^RateLimit-Policy: "ph";q=1;w=3600\r$/mi,
         'decided by linegate_limit');
    my $tat = $r->get(rl_key('ph', $u));
    ok(defined $tat, 'the key is there');
    # 1r/h: charged once, the TAT is at most an hour ahead
    my $ahead = ($tat // 0) - redis_now_us($r);
    ok($ahead > 0 && $ahead <= 3600e6, 'charged once: the 503 cost nothing')
        or diag("TAT +$ahead us");
};

subtest 'several zones, one applying: no lease' => sub {
    my $before = evalsha_calls($r);
    is(get("/one/?k=o$$")->code, 200, 'one zone: passes') for 1 .. 20;
    cmp_ok(evalsha_calls($r) - $before, '<', 20,
           'one zone with a lease: fewer decisions than requests');

    $before = evalsha_calls($r);
    is(get("/two/?k=t$$")->code, 200, 'no X-Key: passes') for 1 .. 20;
    is(evalsha_calls($r) - $before, 20,
       'two zones, hk\'s key empty: Redis decides each request');
};

done_testing;
