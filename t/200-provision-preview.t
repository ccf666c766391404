# POST /accounts/lines/provision-preview (SPEC 3.1-3.3, 3.5): credentials,
# plan, both windows, inventory, the token and the RateLimit headers.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use Mojo::JSON ();
use Time::HiRes ();
use LG::Stack;
use LG::Test;
use LG::Test qw(eventually same_data);
use LG::Provision qw(now_ms);

# t/201 runs this file again with every worker knowing the credentials
# before each call: the plain commands instead of the script
my $KNOWN = $ENV{LG_PV_KNOWN} // 0;
my $s = LG::Stack->new->start;
my $p = LG::Provision->new($s, known => $KNOWN);
my $r = $s->redis;

my $DAY = 86_400_000;
my $ISO = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

$p->inventory($p->numbers(5));

sub iso_of {
    my ($ms) = @_;
    require POSIX;
    return POSIX::strftime('%Y-%m-%dT%H:%M:%S', gmtime int($ms / 1000))
        . sprintf('.%03dZ', $ms % 1000);
}

sub iso_ms {
    my ($iso) = @_;
    my ($y, $mo, $d, $h, $mi, $sec, $ms) =
        $iso =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z$/ or return;
    require Time::Local;
    return Time::Local::timegm($sec, $mi, $h, $d, $mo - 1, $y) * 1000 + $ms;
}

subtest 'a preview: token, expiry, message, headers' => sub {
    my $a = $p->account('acct_pv_ok');
    my $t0 = now_ms();
    my $tx = $p->preview($a);
    my $b = $p->answer($tx, 200, 'preview');

    is($b->{status}, 'OK', 'status OK');
    like($b->{preview_token}, qr/^lpv_[A-Za-z0-9]{40}$/,
         'lpv_ and 40 characters: a slot tag and 37 random (~220 bits)');
    like($b->{expires_at}, $ISO, 'expires_at is ISO 8601 with ms');
    my $exp = iso_ms($b->{expires_at});
    ok($exp >= $t0 + 600_000 - 5 && $exp <= now_ms() + 600_000,
       'expires_at is now + 10 minutes');
    is($b->{message}, 'Call the confirm endpoint with this token within '
       . '10 minutes to complete the purchase.', 'message');
    is_deeply([sort keys %$b],
              [qw(expires_at message preview_token status)], 'fields');

    my $h = $tx->res->headers;
    is($h->header('RateLimit-Policy'),
       '"daily";q=3;w=86400, "monthly";q=10;w=2592000', 'RateLimit-Policy');
    is($h->header('RateLimit'), '"daily";r=3;t=0, "monthly";r=10;t=0',
       'RateLimit: nothing counted');
    is($h->header('Cache-Control'), 'no-store', 'Cache-Control');
    ok(!defined $h->header('Retry-After'), 'no Retry-After');

    # stored as the data model says, expiring with the token
    my $tok = $b->{preview_token};
    my $pv = $r->get($p->token_key($a, $tok));
    ok($pv, "lg:pv:<digest> written");
    my $json = eval { Mojo::JSON::decode_json($pv) } // {};
    is($json->{account}, 'acct_pv_ok', 'the preview names the account');
    is($json->{key_id}, $a->{key_id}, 'and the key id');
    my $t = LG::Provision::now_ms();
    ok($json->{created_at} <= $t && $json->{created_at} > $t - 5000,
       'created_at: now, Unix ms');
    is($json->{expires_at} - $json->{created_at}, 600_000,
       'expires_at: 10 minutes later');
    my $ttl = $r->ttl($p->token_key($a, $tok));
    ok($ttl > 590 && $ttl <= 600, "expires in 600 s ($ttl)");
    # its name holds the token's digest, never the token (a bearer
    # secret: MONITOR, SLOWLOG, SCAN and dumps show key names)
    my ($digest) = $p->token_key($a, $tok) =~ /:(\w+)$/;
    my @other = sort $r->keys("*$digest*");
    is_deeply(\@other, [$p->token_key($a, $tok)], 'one key per token');
    is_deeply([$r->keys('*' . substr($tok, 7) . '*')], [],
              'no key name holds the token');
    is($s->cluster_keyslot($p->token_key($a, $tok)),
       $s->cluster_keyslot("lg:{acct:$a->{id}}"),
       "the token's key is in the account's slot (its tag: "
       . substr($tok, 4, 3) . ')');

    my $b2 = $p->answer($p->preview($a), 200, 'second preview');
    isnt($b2->{preview_token}, $tok, 'every preview has its own token');
    is($r->scard('lg:{fleet}:inventory'), 5, 'a preview reserves no number');
    is($r->zcard('lg:{acct:acct_pv_ok}:prov'), 0, 'nor a slot');
};

subtest 'an empty body, {} or another object are all accepted' => sub {
    my $a = $p->account('acct_pv_body');
    $p->answer($p->preview($a, json => {}), 200, '{}');
    $p->answer($p->preview($a, json => {x => 1}), 200, 'unknown fields');
    # "\u0000" is valid JSON, and no field of it is read (SPEC)
    $p->answer($p->preview($a, json => {x => "a\0b"}), 200,
               'a NUL in an unknown field');
    $p->error_is($p->preview($a, 'not json'), 400, undef, 'not JSON');
    $p->error_is($p->preview($a, json => [1]), 400, undef, 'an array');
};

subtest '401: missing or invalid credentials' => sub {
    my $a = $p->account('acct_pv_auth');
    my $ua = $s->ua;
    my $url = $s->url($LG::Provision::PREVIEW);

    my @cases = (
        ['no headers', {}],
        ['key id only', {'sb-api-key-id' => $a->{key_id}}],
        ['secret only', {'sb-api-secret-key' => $a->{secret}}],
        ['unknown key id', {'sb-api-key-id' => 'sbk_nobody',
                            'sb-api-secret-key' => $a->{secret}}],
        ['wrong secret', {'sb-api-key-id' => $a->{key_id},
                          'sb-api-secret-key' => $a->{secret} . 'x'}],
        ['empty secret', {'sb-api-key-id' => $a->{key_id},
                          'sb-api-secret-key' => ''}],
        ['a key id with odd characters',
         {'sb-api-key-id' => "$a->{key_id}}", 'sb-api-secret-key' => 'x'}],
        ['the digest instead of the secret',
         {'sb-api-key-id' => $a->{key_id},
          'sb-api-secret-key' => sha256_hex($a->{secret})}],
    );

    for my $c (@cases) {
        my ($name, $h) = @$c;
        my $tx = $ua->post($url => $h);
        my $b = $p->error_is($tx, 401, undef, $name,
                             qr/^Invalid API credentials$/);
        ok(!defined $tx->res->headers->header('RateLimit'),
           "$name: no RateLimit headers for an unknown caller");
        ok(!defined $tx->res->headers->header('WWW-Authenticate'),
           "$name: no challenge (sb-api-* is no HTTP scheme)");
    }

    # the credentials before the body: a body that is not JSON is
    # judged only for a known caller
    for my $c (@cases[3, 4]) {
        my ($name, $h) = @$c;
        $p->error_is($ua->post($url => $h => 'not json'), 401, undef,
                     "$name and a body that is not JSON: 401");
    }
    $p->error_is($ua->post($url => $p->headers($a) => 'not json'), 400,
                 undef, 'a known caller: 400 for that body');

    my $tx = $ua->post($url => {'SB-API-KEY-ID' => $a->{key_id},
                                'Sb-Api-Secret-Key' => $a->{secret}});
    $p->answer($tx, 200, 'header names in any case');

    # two values of one credential header: which pair is meant is
    # unknown, neither is tried (the first one won before, silently)
    for my $h (['sb-api-key-id', [$a->{key_id}, 'sbk_other']],
               ['sb-api-secret-key', [$a->{secret}, 'sbs_other']]) {
        my %pair = (%{ $p->headers($a) }, $h->[0] => $h->[1]);
        $p->error_is($ua->post($url => \%pair), 401, undef,
                     "two different $h->[0] headers",
                     qr/^Invalid API credentials$/);
    }
    $p->answer($ua->post($url => {
                   'sb-api-key-id' => [$a->{key_id}, $a->{key_id}],
                   'sb-api-secret-key' => $a->{secret}}),
               200, 'the same key id twice: one credential');

    # every worker now remembers the pair: another secret is still asked
    # of the store (the cache is keyed by key id and secret together)
    $p->answer($p->preview($a), 200, "warm $_") for 1 .. 4;
    $p->error_is($ua->post($url => {'sb-api-key-id' => $a->{key_id},
                                    'sb-api-secret-key' => "$a->{secret}x"}),
                 401, undef, 'a wrong secret for a remembered key id');

    # a secret rotated away in Redis itself no longer works once the
    # workers' entries expire (linegate_api_key_cache, 500ms; through the
    # operator API at once: t/040)
    $r->hset("lg:sbkey:$a->{key_id}", secret_sha256 => sha256_hex('other'));
    Time::HiRes::sleep(0.6);
    $p->error_is($p->preview($a), 401, undef, 'a rotated secret');

    ok($s->access_log =~ /auth=sb_key outcome=unauthorized/,
       'access log: $linegate_outcome unauthorized');
};

subtest '403: not on the inbound_only plan' => sub {
    for my $plan ('standard', 'inbound') {
        my $a = $p->account("acct_pv_$plan", plan => $plan);
        my $tx = $p->preview($a);
        $p->error_is($tx, 403, undef, "plan $plan",
                     qr/^Account is not on the inbound_only plan$/);
        ok($tx->res->headers->header('RateLimit'), 'RateLimit headers');
    }

    my $a = $p->account('acct_pv_noplan');
    $r->hdel('lg:{acct:acct_pv_noplan}', 'plan');
    $p->error_is($p->preview($a), 403, undef, 'no plan at all');
};

subtest '429: daily and monthly limits, Retry-After, headers' => sub {
    my $now = now_ms();

    # the configured default: 3 per day; the oldest counted 1 h ago
    my $a = $p->account('acct_pv_day');
    $r->zadd('lg:{acct:acct_pv_day}:prov', $now - 3_600_000, 'worker_a',
             $now - 1_800_000, 'worker_b', $now - 600_000, 'worker_c');
    my $tx = $p->preview($a);
    $p->error_is($tx, 429, 'daily_limit_reached', 'daily default',
                 qr/^Maximum 3 lines can be added per day via API$/);
    my $ra = $tx->res->headers->header('Retry-After');
    ok($ra >= 82_799 && $ra <= 82_801,
       "Retry-After: the oldest line leaves in 23 h ($ra)");
    like($tx->res->headers->header('RateLimit'),
         qr/^"daily";r=0;t=$ra, "monthly";r=7;t=\d+$/,
         'RateLimit: none left today, t = Retry-After');

    # the account's own limit, in the message
    $a = $p->account('acct_pv_day5', daily => 5, monthly => 50);
    $r->zadd('lg:{acct:acct_pv_day5}:prov',
             map { ($now - $_ * 60_000, "worker_$_") } 1 .. 5);
    $tx = $p->preview($a);
    $p->error_is($tx, 429, 'daily_limit_reached', 'daily override',
                 qr/^Maximum 5 lines can be added per day via API$/);
    is($tx->res->headers->header('RateLimit-Policy'),
       '"daily";q=5;w=86400, "monthly";q=50;w=2592000',
       'RateLimit-Policy follows the account');

    # monthly: 10 by default, spread over the last 20 days
    $a = $p->account('acct_pv_month');
    $r->zadd('lg:{acct:acct_pv_month}:prov',
             map { ($now - (2 + 2 * $_) * $DAY, "worker_$_") } 0 .. 9);
    $tx = $p->preview($a);
    $p->error_is($tx, 429, 'monthly_limit_reached', 'monthly default',
                 qr/^Maximum 10 lines can be added per month via API$/);
    $ra = $tx->res->headers->header('Retry-After');
    my $want = 30 * 86_400 - 20 * 86_400;
    ok($ra >= $want - 1 && $ra <= $want + 1,
       "Retry-After: the oldest of the month leaves in 10 days ($ra)");

    $a = $p->account('acct_pv_month2', monthly => 2);
    $r->zadd('lg:{acct:acct_pv_month2}:prov', $now - 5 * $DAY, 'worker_x',
             $now - 3 * $DAY, 'worker_y');
    $p->error_is($p->preview($a), 429, 'monthly_limit_reached',
                 'monthly override',
                 qr/^Maximum 2 lines can be added per month via API$/);

    # a lowered limit: the slot frees when enough lines have left
    $a = $p->account('acct_pv_lowered', daily => 1);
    $r->zadd('lg:{acct:acct_pv_lowered}:prov', $now - 5 * 3_600_000, 'w1',
             $now - 2 * 3_600_000, 'w2');
    $tx = $p->preview($a);
    $ra = $tx->res->headers->header('Retry-After');
    ok($ra >= 22 * 3600 - 1 && $ra <= 22 * 3600 + 1,
       "2 counted, limit 1: a slot frees when the newer leaves ($ra)");

    $a = $p->account('acct_pv_zero', daily => 0);
    $tx = $p->preview($a);
    $p->error_is($tx, 429, 'daily_limit_reached', 'a limit of 0',
                 qr/^Maximum 0 lines can be added per day via API$/);
    is($tx->res->headers->header('Retry-After'), 86_400,
       'Retry-After: a whole window when no slot can free');
    # RateLimit says the same: t=0 beside r=0 read as "retry now"
    is($tx->res->headers->header('RateLimit'),
       '"daily";r=0;t=86400, "monthly";r=10;t=0',
       'RateLimit: the same whole window, not t=0');
};

# an account's limit is read as the confirm's script reads it (Lua's
# tonumber: strtod, then any isspace() after the number): a preview that
# took "1\v" for no number said 200 (the default, 3) to a purchase the
# confirm then refused 429
subtest 'a limit with trailing white space: the confirm\'s reading' => sub {
    my $now = now_ms();
    for my $ws ("\x0b", "\x0c", " \t\r\n") {
        my $name = join '', map { sprintf '\\x%02x', ord } split //, $ws;
        (my $id = "acct_pv_ws_$name") =~ s/\W/_/g;
        my $a = $p->account($id);
        $r->hset("lg:{acct:$id}", daily_limit => "1$ws");
        $r->zadd("lg:{acct:$id}:prov", $now - 60_000, 'w1');
        $p->error_is($p->preview($a), 429, 'daily_limit_reached',
                     "daily_limit \"1$name\": 1",
                     qr/^Maximum 1 lines can be added per day via API$/);
    }

    # white space alone is no number: the default, 3 (it was read as 0)
    for my $ws (" ", "\t", "\x0b") {
        my $name = sprintf '\\x%02x', ord $ws;
        (my $id = "acct_pv_blank_$name") =~ s/\W/_/g;
        my $a = $p->account($id);
        $r->hset("lg:{acct:$id}", daily_limit => $ws);
        $r->zadd("lg:{acct:$id}:prov", $now - 60_000, 'w1');
        my $tx = $p->preview($a);
        $p->answer($tx, 200, "daily_limit \"$name\": the default");
        like($tx->res->headers->header('RateLimit') // '', qr/^"daily";r=2;/,
             "daily_limit \"$name\": 3, one used");
    }
};

subtest 'window edges: 24 h and 30 d, one second either side' => sub {
    my $now = now_ms();

    my $a = $p->account('acct_edge_day_in', daily => 1);
    $r->zadd('lg:{acct:acct_edge_day_in}:prov', $now - $DAY + 1000, 'w');
    my $tx = $p->preview($a);
    $p->error_is($tx, 429, 'daily_limit_reached', '24 h - 1 s ago counts');
    ok($tx->res->headers->header('Retry-After') <= 1,
       'Retry-After: 1 second');

    $a = $p->account('acct_edge_day_out', daily => 1);
    $r->zadd('lg:{acct:acct_edge_day_out}:prov', $now - $DAY - 1000, 'w');
    $tx = $p->preview($a);
    $p->answer($tx, 200, '24 h + 1 s ago no longer counts');
    like($tx->res->headers->header('RateLimit'), qr/^"daily";r=1;t=0, /,
         'RateLimit: daily window empty');

    $a = $p->account('acct_edge_month_in', daily => 9, monthly => 1);
    $r->zadd('lg:{acct:acct_edge_month_in}:prov',
             $now - 30 * $DAY + 1000, 'w');
    $p->error_is($p->preview($a), 429, 'monthly_limit_reached',
                 '30 d - 1 s ago counts');

    $a = $p->account('acct_edge_month_out', daily => 9, monthly => 1);
    $r->zadd('lg:{acct:acct_edge_month_out}:prov',
             $now - 30 * $DAY - 1000, 'w');
    $p->answer($p->preview($a), 200, '30 d + 1 s ago no longer counts');
};

subtest 'RateLimit headers count what is left' => sub {
    my $now = now_ms();
    my $a = $p->account('acct_pv_rl');
    $r->zadd('lg:{acct:acct_pv_rl}:prov', $now - 3_600_000, 'w1',
             $now - 10 * $DAY, 'w2');
    my $tx = $p->preview($a);
    $p->answer($tx, 200, 'preview');
    my ($dr, $dt, $mr, $mt) = $tx->res->headers->header('RateLimit')
        =~ /^"daily";r=(\d+);t=(\d+), "monthly";r=(\d+);t=(\d+)$/;
    is($dr, 2, 'daily: 2 left');
    ok($dt >= 82_799 && $dt <= 82_801, "daily t: 23 h ($dt)");
    is($mr, 8, 'monthly: 8 left');
    ok($mt >= 20 * 86_400 - 1 && $mt <= 20 * 86_400 + 1,
       "monthly t: the 10-day-old line leaves in 20 days ($mt)");
};

subtest '503: inventory empty' => sub {
    my $a = $p->account('acct_pv_empty');
    my @all = $r->smembers('lg:{fleet}:inventory');
    $r->del('lg:{fleet}:inventory');
    my $tx = $p->preview($a);
    $p->error_is($tx, 503, 'no_lines_available', 'empty inventory',
                 qr/^No lines are currently available$/);
    ok(!defined $tx->res->headers->header('Retry-After'), 'no Retry-After');
    $r->sadd('lg:{fleet}:inventory', @all);
    $p->answer($p->preview($a), 200, 'numbers again');
};

# Numbers loaded before the loader refused a country code of 0 ("+0...",
# no E.164 number), or written by hand, are no stock: a confirm's claim
# sets them aside (t/220). A preview counted them (SCARD) and answered
# 200 for an inventory of nothing else, whose confirm then answered 503.
# It now looks at one number (SRANDMEMBER); one no confirm could sell
# makes it set such numbers aside as the claim would (pv_stock.lua), at
# most 100 a preview, until it finds one to sell.
subtest '503: an inventory of numbers no confirm can sell' => sub {
    my $a = $p->account('acct_pv_bad_nr');
    my @all = $r->smembers('lg:{fleet}:inventory');
    my $Q = 'lg:{fleet}:inventory:quarantine';
    my @bad = ('+04155550001', '+04155550002', '+0415555', '+1234');
    $r->del('lg:{fleet}:inventory', $Q);
    $r->sadd('lg:{fleet}:inventory', @bad);
    my $tx = $p->preview($a);
    $p->error_is($tx, 503, 'no_lines_available', 'only "+0..." numbers',
                 qr/^No lines are currently available$/);
    unlike($tx->res->body, qr/lpv_/, 'no token');
    is($r->scard('lg:{fleet}:inventory'), 0, 'none left in the inventory');
    is_deeply([sort $r->smembers($Q)], [sort @bad],
              'every one set aside, as a confirm\'s claim would');
    ok(!$r->sismember('lg:{fleet}:held', $_), "$_ is not held") for @bad;
    my $log = $s->error_log;
    like($log, qr/inventory number "\Q$_\E" is not an E\.164 number/,
         "$_ logged") for @bad;

    # one good number among bad ones: 200, and the good one stays
    $r->sadd('lg:{fleet}:inventory', '+04155550003', '+14155550998');
    $p->answer($p->preview($a), 200, 'one good number');
    ok($r->sismember('lg:{fleet}:inventory', '+14155550998'),
       'the good number is only looked at');
    $p->answer($p->preview($a), 200, 'again') for 1 .. 3;
    is($r->scard('lg:{fleet}:inventory')
       + ($r->sismember($Q, '+04155550003') ? 1 : 0), 2,
       'the bad one in the inventory or set aside, nothing lost');

    # a long bad list: at most 100 set aside a preview, which answers 503;
    # the next one goes on
    $r->del('lg:{fleet}:inventory', $Q);
    $r->sadd('lg:{fleet}:inventory', map { sprintf '+0%010d', $_ } 1 .. 150);
    $p->error_is($p->preview($a), 503, 'no_lines_available',
                 '150 bad numbers: the first 100');
    is($r->scard($Q), 100, '100 set aside');
    is($r->scard('lg:{fleet}:inventory'), 50, '50 left');
    $p->error_is($p->preview($a), 503, 'no_lines_available', 'the rest');
    is($r->scard($Q), 150, 'all set aside');

    # a plan or a window refusal never looks further
    $r->sadd('lg:{fleet}:inventory', '+04155550004');
    $r->hset("lg:{acct:$a->{id}}", daily_limit => 0);
    $p->error_is($p->preview($a), 429, 'daily_limit_reached', 'limit 0');
    ok($r->sismember('lg:{fleet}:inventory', '+04155550004'),
       'a refused preview sets nothing aside');
    $r->hdel("lg:{acct:$a->{id}}", 'daily_limit');

    $r->del('lg:{fleet}:inventory', $Q);
    $r->sadd('lg:{fleet}:inventory', @all);
    $p->answer($p->preview($a), 200, 'numbers again');
};

# A preview that fails after its token was written ahead (here the
# account's window is no zset: Redis answers its read with an error, a
# 503 as any Redis failure) was
# never told its token, so nobody can confirm it; still it leaves nothing
# behind, as a refusal does: the token is deleted (not waited for)
subtest 'a failure after the token was written: the token deleted' => sub {
    my $a = $p->account('acct_pv_broken');
    $p->answer($p->preview($a), 200, 'a preview') for 1 .. 2;
    my @before = sort $r->keys("lg:pv:*");
    $r->set("lg:{acct:$a->{id}}:prov", 'not a zset');
    for (1 .. 2) {
        my $tx = $p->preview($a);
        # a key of the wrong type: no retry changes it, 500 (t/032)
        is($tx->res->code, 500, "the window unreadable: 500 ($_)");
        ok(!defined $tx->res->headers->header('Retry-After'),
           'no Retry-After');
        unlike($tx->res->body, qr/lpv_/, 'no token in the answer');
    }
    ok(eventually(sub { same_data([sort $r->keys("lg:pv:*")], \@before) },
                  5), 'no token left stored')
        or diag explain [sort $r->keys("lg:pv:*")];
    $r->del("lg:{acct:$a->{id}}:prov");
};

subtest '405: preview is a POST' => sub {
    my $a = $p->account('acct_pv_method');
    my $tx = $s->ua->get($s->url($LG::Provision::PREVIEW) => $p->headers($a));
    $p->error_is($tx, 405, undef, 'GET preview');
};

# The Redis traffic of a call made while the serving worker knows the
# credentials (its cache holds them for linegate_api_key_cache): on a
# loaded machine an entry may expire between the warm-up and the call,
# and that call is the script's; the call is then made again (5 tries).
sub plain {
    my ($call) = @_;
    my ($cmds, $trips);
    for (1 .. 5) {
        ($cmds, $trips) = $s->redis_traffic($call, again => 1);
        last unless grep { /"EVALSHA"/i } @$cmds;
    }
    return ($cmds, $trips);
}

subtest 'round trips: a script, then plain commands' => sub {
    plan skip_all => 'run by t/200 (this one warms up every call)'
        if $KNOWN;
    # on a cluster a pipeline's commands go to two or three masters at
    # once: one round trip of latency, but a read on each master, and
    # their MONITORs interleave; counted on one Redis (and the cluster's
    # commands per preview by make bench's cluster phase)
    plan skip_all => 'round trips are counted on one Redis'
        if $s->topology eq 'cluster';
    # unknown to the workers: pv_account.lua checks the credentials, then
    # the plain commands decide, as for known ones (one round trip more,
    # on a cache miss only: the rule is written once, in C). A window
    # that saw a keepalive PING is measured again, with credentials no
    # worker knows yet.
    my ($a, $cmds, $trips, $pings);
    for my $try (1 .. 5) {
        $a = $p->account("acct_pv_rtt$try");
        ($cmds, $trips, $pings) = $s->redis_traffic(sub {
            $p->answer($p->preview($a), 200,
                       'preview, credentials unknown');
        });
        last unless $pings;
    }
    is($trips, 2, 'two round trips');
    my @names = map { /"(\w+)"/ ? uc $1 : '?' } @$cmds;
    is_deeply(\@names, [qw(EVALSHA HMGET ZRANGEBYSCORE SRANDMEMBER SET)],
              'the credentials, then the plain commands') or diag "@$cmds";
    like($cmds->[0] // '',
         qr/"EVALSHA" "[0-9a-f]{40}" "1" "lg:sbkey:\Q$a->{key_id}\E"/,
         'the credentials\' script');

    # known (every worker saw the store accept them): plain commands, the
    # reads and the token written ahead of the checks, in one write
    $p->answer($p->preview($a), 200, "warm $_") for 1 .. 4;
    ($cmds, $trips) = plain(sub {
        $p->answer($p->preview($a), 200, 'preview, credentials known');
    });
    @names = map { /"(\w+)"/ ? uc $1 : '?' } @$cmds;
    is_deeply(\@names, [qw(HMGET ZRANGEBYSCORE SRANDMEMBER SET)],
              'the reads and the token') or diag "@$cmds";
    like(join(' ', @$cmds),
         qr/"SET" "lg:pv:\{\w{3}\}:[0-9a-f]{64}" "\{\\"account\\":\\"\Q$a->{id}\E\\"/,
         'the token: lg:pv:{<tag>}:<digest>, naming the account (a '
         . 'confirm by another account finds it: 403)');
    is($trips, 1, 'one round trip');
    ok(!grep(/"EVALSHA"/i, @$cmds), 'no script');

    ($cmds, $trips) = plain(sub {
        $p->answer($p->limits($a), 200, 'limits, credentials known');
    });
    @names = map { /"(\w+)"/ ? uc $1 : '?' } @$cmds;
    is_deeply(\@names, [qw(HMGET ZRANGEBYSCORE)],
              'limits: the reads') or diag "@$cmds";
    is($trips, 1, 'limits: one round trip');

    # a refused preview leaves nothing: the token written ahead is
    # deleted before the answer
    $r->hset("lg:{acct:$a->{id}}", daily_limit => 0);
    $p->error_is($p->preview($a), 429, 'daily_limit_reached', "warm $_")
        for 1 .. 4;
    my @before = sort $r->keys("lg:pv:*");
    ($cmds, $trips) = plain(sub {
        $p->error_is($p->preview($a), 429, 'daily_limit_reached',
                     'limit 0');
    });
    @names = map { /"(\w+)"/ ? uc $1 : '?' } @$cmds;
    is_deeply(\@names, [qw(HMGET ZRANGEBYSCORE SRANDMEMBER SET DEL)],
              'refused: the token deleted') or diag "@$cmds";
    my ($set) = grep { /"SET"/i } @$cmds;
    my ($del) = grep { /"DEL"/i && /:pv:/ } @$cmds;
    my ($k1) = ($set // '') =~ /"(lg:pv:\{\w+\}:\w+)"/;
    my ($k2) = ($del // '') =~ /"(lg:pv:\{\w+\}:\w+)"/;
    is($k2, $k1, 'the very token written ahead');
    is($trips, 2, 'refused: a second round trip, before the answer');
    my @after = sort $r->keys("lg:pv:*");
    is_deeply(\@after, \@before, 'refused: no token stored');
};

subtest 'a long window: bounded reads, the same answers' => sub {
    plan skip_all => 'commands are counted on one Redis'
        if $s->topology eq 'cluster';
    # an account with a large limit: thousands of lines in its 30-day
    # window. A preview reads a few dozen lines at most, then counts
    # (ZCOUNT) and finds the line that frees a slot by its rank: its work
    # in Redis does not grow with the window (it read 1,001 lines a
    # preview, 73 us of Redis each under make bench's confirm phase)
    my $now = now_ms();
    my $a = $p->account('acct_pv_long', daily => 100_000,
                        monthly => 100_000);
    my $key = 'lg:{acct:acct_pv_long}:prov';
    my @z = map { ($now - 2 * $DAY - $_ * 1000, "w_$_") } 1 .. 3000;
    $r->zadd($key, @z[$_ * 500 .. $_ * 500 + 499]) for 0 .. 11;
    $r->zadd($key, $now - 2 * 3_600_000 - $_ * 1000, "today_$_") for 1 .. 40;

    my $tx = $p->preview($a);
    $p->answer($tx, 200, 'a window of 3,040 lines: 200');
    is($tx->res->headers->header('RateLimit-Policy') // '',
       '"daily";q=100000;w=86400, "monthly";q=100000;w=2592000',
       'the account\'s limits');
    $p->answer($p->preview($a), 200, "warm $_") for 1 .. 4;
    my ($cmds) = plain(sub {
        $p->answer($p->preview($a), 200, 'preview, long window');
    });
    my @reads = grep { /"ZRANGEBYSCORE"/i } @$cmds;
    ok(@reads, 'the window is read') or diag "@$cmds";
    my @counts = map { /"LIMIT" "(\d+)" "(\d+)"/ ? [$1, $2] : [0, 1e9] }
                 @reads;
    ok(!grep({ $_->[1] > 64 } @counts),
       'no read takes more than a few dozen lines')
        or diag "@reads";
    ok(!grep({ $_->[0] > 0 } @counts), 'no offset walked into a range')
        or diag "@reads";
    ok(!grep(/"ZREVRANGEBYSCORE"/i, @$cmds),
       'the limit-th newest by its rank') or diag "@$cmds";
    ok(scalar(grep { /"ZCOUNT"/i } @$cmds) >= 2, 'both windows counted')
        or diag "@$cmds";
    SKIP: {
        skip 'round trips are counted by t/200 (every call warms up)', 2
            if $KNOWN;
        # a worker that found the window long counts it at once: the
        # counts go in the reads' round trip, no lines are read
        my $trips;
        ($cmds, $trips) = plain(sub {
            $p->answer($p->preview($a), 200, 'preview, long window known');
        });
        is($trips, 1, 'a long window known to the worker: one round trip')
            or diag "@$cmds";
        ok(!grep({ /"LIMIT" "0" "(\d+)"/ && $1 > 1 } @$cmds),
           'counted, no lines read') or diag "@$cmds";
    }

    my $b = $p->answer($p->limits($a), 200, 'limits, long window');
    is($b->{limits}{monthly}{used}, 3040, 'monthly: 3,040 used');
    is($b->{limits}{daily}{used}, 40, 'daily: 40 used');
    is($b->{limits}{daily}{resets_at} // '',
       iso_of($now - 2 * 3_600_000 - 40_000 + $DAY),
       'daily resets when its oldest leaves');

    # full because the limit was lowered below the count: the slot frees
    # when the limit-th newest leaves, and the preview says when
    $r->hset("lg:{acct:acct_pv_long}", daily_limit => 10);
    $tx = $p->preview($a);
    $p->error_is($tx, 429, 'daily_limit_reached', 'over the daily limit');
    my $free = $now - 2 * 3_600_000 - 10_000 + $DAY;
    my $after = $tx->res->headers->header('Retry-After') // -1;
    ok(abs($after - ($free - now_ms()) / 1000) <= 5,
       "Retry-After when the 10th newest leaves ($after s)");
    $b = $p->answer($p->limits($a), 200, 'limits, over the limit');
    is($b->{limits}{daily}{resets_at} // '', iso_of($free),
       'resets when the 10th newest leaves');

    # the window shrinks: the workers read its lines again
    $r->del($key);
    $r->zadd($key, $now - 3_600_000, 'w_1', $now - 7_200_000, 'w_2');
    $r->hset("lg:{acct:acct_pv_long}", daily_limit => 100_000);
    $p->answer($p->preview($a), 200, "short again $_") for 1 .. 6;
    $b = $p->answer($p->limits($a), 200, 'limits, short again');
    is($b->{limits}{monthly}{used}, 2, 'short again: 2 used');
    is($b->{limits}{monthly}{resets_at} // '',
       iso_of($now - 7_200_000 + 30 * $DAY), 'short again: resets_at');
    ($cmds) = plain(sub {
        $p->answer($p->preview($a), 200, 'preview, short again');
    });
    ok(!grep({ /"ZCOUNT"/i } @$cmds), 'short again: the lines read')
        or diag "@$cmds";
};

subtest 'secrets and tokens stay out of the logs' => sub {
    my $log = $s->error_log . $s->access_log;
    # the tokens the previews answered (Redis holds their digests)
    my @tokens = $p->issued;
    ok(@tokens, 'tokens were issued');
    for my $t (@tokens) {
        unlike($log, qr/\Q$t\E/, 'a token is not logged');
    }
    unlike($log, qr/sbs_/, 'no secret is logged');
};

subtest 'Redis down: 503 STORE_UNAVAILABLE, Retry-After' => sub {
    my $a = $p->account('acct_pv_down');
    $s->stop_redis;
    my $tx = $p->preview($a);
    $p->error_is($tx, 503, 'store_unavailable', 'preview');
    is($tx->res->headers->header('Retry-After'), 1, 'Retry-After: 1');
    $tx = $p->limits($a);
    $p->error_is($tx, 503, 'store_unavailable', 'limits');
    $s->start_redis;
};

done_testing();
