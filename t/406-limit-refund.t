# linegate_limit with two zones, one of which rejects: the zone that
# admitted gives its admission back in dry run as with enforcement (what a
# dry run leaves is what the limit would leave), and its RateLimit numbers
# are those of the state it is left in; both with Redis and in the local
# fallback. One worker: a refund goes out on the connection before the
# next request's decision.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test ();

my $dir = LG::Test::public_dir('file.txt' => "ok\n");

# quota: 5 a day, all at once (T = 17280 s)
my $http = <<"CONF";
    linegate_limit_zone fast key=\$arg_k rate=1r/h burst=0;
    linegate_limit_zone quota key=\$arg_k rate=5r/d burst=4;
CONF

my $server = <<"CONF";
        root $dir;
        add_header X-Limit \$linegate_limit_status always;
        linegate_limit_on_error local;
        location /enforce/ {
            linegate_limit zone=fast;
            linegate_limit zone=quota;
            try_files /file.txt =404;
        }
        location /dry/ {
            linegate_limit zone=fast;
            linegate_limit zone=quota;
            linegate_limit_dry_run on;
            try_files /file.txt =404;
        }
        location /quota/ {
            linegate_limit zone=quota;
            try_files /file.txt =404;
        }
CONF

my $s = LG::Stack->new(stub => 0, WORKERS => 1, HTTP_EXTRA => $http,
                       SERVER_EXTRA => $server)->start;
my $ua = $s->ua;

sub get { return $ua->get($s->url($_[0]))->res }

sub st {
    my $res = get($_[0]);
    return $res->code . ' ' . ($res->headers->header('X-Limit') // '');
}

# 6 requests to $loc, then the quota alone must admit 4 more and no 5th
sub quota_left {
    my ($loc, $k, $pass, $reject) = @_;
    my @st = map { st("/$loc/?k=$k") } 1 .. 6;
    is_deeply(\@st, [$pass, ($reject) x 5], "$loc: the fast zone rejects")
        or diag("@st");
    my @q = map { get("/quota/?k=$k")->code } 1 .. 5;
    is_deeply(\@q, [200, 200, 200, 200, 429],
              "$loc: the quota was charged once") or diag("@q");
}

sub refunded_headers {
    my ($k, $pass, $reject) = @_;
    my $res = get("/enforce/?k=$k");
    is($res->code . ' ' . $res->headers->header('X-Limit'), $pass,
       'first passes');
    like($res->headers->header('RateLimit') // '',
         qr/^"fast";r=0;t=3600, "quota";r=4;t=17280$/, 'both charged');
    $res = get("/enforce/?k=$k");
    is($res->code . ' ' . $res->headers->header('X-Limit'), $reject,
       'second rejected by fast');
    like($res->headers->header('RateLimit') // '',
         qr/^"fast";r=0;t=\d+, "quota";r=4;t=1728[0-9]$/,
         'quota as it is left: given back, not charged twice')
        or diag($res->headers->header('RateLimit'));
}

subtest 'Redis: dry run gives back as enforcement does' => sub {
    quota_left('enforce', "e$$", '200 PASSED', '429 REJECTED');
    quota_left('dry', "d$$", '200 PASSED', '200 REJECTED_DRY_RUN');
};

subtest 'Redis: RateLimit after a refund' => sub {
    refunded_headers("h$$", '200 PASSED', '429 REJECTED');
};

$s->stop_redis;

subtest 'local: dry run charges nothing another zone rejects' => sub {
    quota_left('enforce', "le$$", '200 LOCAL_PASSED', '429 LOCAL_REJECTED');
    quota_left('dry', "ld$$", '200 LOCAL_PASSED', '200 LOCAL_REJECTED');
};

subtest 'local: RateLimit of a zone not charged' => sub {
    refunded_headers("lh$$", '200 LOCAL_PASSED', '429 LOCAL_REJECTED');
};

done_testing;
