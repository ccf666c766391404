# GET /accounts/limits (SPEC 3.6): both rolling windows, the account's
# limits or the configured defaults, resets_at, RateLimit headers.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use POSIX qw(strftime);
use LG::Stack;
use LG::Test;
use LG::Provision qw(now_ms);

# other defaults than SPEC's, to see that the configuration is followed.
# This file runs the script (no credentials cache); t/211 runs it again
# with every worker knowing the credentials first: the plain commands.
my $KNOWN = $ENV{LG_PV_KNOWN} // 0;
my $s = LG::Stack->new(stub => 0,
    HTTP_EXTRA => 'linegate_provision_limits 4 12;'
                  . ($KNOWN ? '' : ' linegate_api_key_cache 0;'))->start;
my $p = LG::Provision->new($s, known => $KNOWN);
my $r = $s->redis;

my $DAY = 86_400_000;

sub iso {
    my ($ms) = @_;
    return strftime('%Y-%m-%dT%H:%M:%S', gmtime int($ms / 1000))
        . sprintf('.%03dZ', $ms % 1000);
}

subtest 'nothing counted: the configured defaults, resets_at null' => sub {
    my $a = $p->account('acct_lim_new', no_stub_customer => 1);
    my $tx = $p->limits($a);
    my $b = $p->answer($tx, 200, 'limits');

    is_deeply($b, {status => 'OK', limits => {
        daily   => {limit => 4, used => 0, remaining => 4,
                    window_seconds => 86400, resets_at => undef},
        monthly => {limit => 12, used => 0, remaining => 12,
                    window_seconds => 2592000, resets_at => undef},
    }}, 'the body of SPEC 3.6');
    is($tx->res->headers->header('RateLimit-Policy'),
       '"daily";q=4;w=86400, "monthly";q=12;w=2592000', 'RateLimit-Policy');
    is($tx->res->headers->header('RateLimit'),
       '"daily";r=4;t=0, "monthly";r=12;t=0', 'RateLimit');
};

subtest 'lines counted, the account\'s own limits' => sub {
    my $now = now_ms();
    my $a = $p->account('acct_lim_used', daily => 3, monthly => 10,
                        no_stub_customer => 1);
    my $d1 = $now - 2 * 3_600_000;
    my $m1 = $now - 20 * $DAY;
    $r->zadd('lg:{acct:acct_lim_used}:prov', $d1, 'worker_1',
             $now - 3_600_000, 'worker_2', $now - 3 * $DAY, 'worker_3',
             $m1, 'worker_4', $now - 40 * $DAY, 'worker_old');

    my $tx = $p->limits($a);
    my $b = $p->answer($tx, 200, 'limits');
    is_deeply($b->{limits}{daily}, {limit => 3, used => 2, remaining => 1,
              window_seconds => 86400, resets_at => iso($d1 + $DAY)},
              'daily: 2 used, resets when the oldest of today leaves');
    is_deeply($b->{limits}{monthly}, {limit => 10, used => 4,
              remaining => 6, window_seconds => 2592000,
              resets_at => iso($m1 + 30 * $DAY)},
              'monthly: 4 used (40 days ago is out)');

    my ($dt, $mt) = $tx->res->headers->header('RateLimit')
        =~ /^"daily";r=1;t=(\d+), "monthly";r=6;t=(\d+)$/;
    ok($dt && abs($dt - 22 * 3600) <= 1, "RateLimit daily t ($dt)");
    ok($mt && abs($mt - 10 * 86400) <= 1, "RateLimit monthly t ($mt)");
};

subtest 'a full window: remaining 0, resets when a slot frees' => sub {
    my $now = now_ms();
    my $a = $p->account('acct_lim_full', daily => 2, no_stub_customer => 1);
    my @t = ($now - 5 * 3_600_000, $now - 4 * 3_600_000,
             $now - 3 * 3_600_000);
    $r->zadd('lg:{acct:acct_lim_full}:prov',
             map { ($t[$_], "worker_$_") } 0 .. 2);

    my $b = $p->answer($p->limits($a), 200, 'limits');
    is($b->{limits}{daily}{used}, 3, 'used 3 (the limit was lowered)');
    is($b->{limits}{daily}{remaining}, 0, 'remaining never below 0');
    is($b->{limits}{daily}{resets_at}, iso($t[1] + $DAY),
       'one more line once the second oldest has left');
};

# a limit of 0 frees no slot ever: t is a whole window, as a 429's
# Retry-After (t=0 beside r=0 read as "retry now"); resets_at stays null,
# no moment frees one
subtest 'a limit of 0: t a whole window, resets_at null' => sub {
    my $a = $p->account('acct_lim_zero', daily => 0, monthly => 0,
                        no_stub_customer => 1);
    $r->zadd('lg:{acct:acct_lim_zero}:prov', now_ms() - 3_600_000, 'w1');
    my $tx = $p->limits($a);
    my $b = $p->answer($tx, 200, 'limits');
    is_deeply($b->{limits}{daily}, {limit => 0, used => 1, remaining => 0,
              window_seconds => 86400, resets_at => undef}, 'daily');
    is_deeply($b->{limits}{monthly}, {limit => 0, used => 1, remaining => 0,
              window_seconds => 2592000, resets_at => undef}, 'monthly');
    is($tx->res->headers->header('RateLimit'),
       '"daily";r=0;t=86400, "monthly";r=0;t=2592000',
       'RateLimit: a whole window each');

    $a = $p->account('acct_lim_zero2', daily => 0, no_stub_customer => 1);
    is($p->limits($a)->res->headers->header('RateLimit'),
       '"daily";r=0;t=86400, "monthly";r=12;t=0',
       'nothing counted, a limit of 0: a whole window too');
};

subtest 'more lines than one read takes (1,000): still counted' => sub {
    my $now = now_ms();
    my $a = $p->account('acct_lim_many', daily => 5000, monthly => 5000,
                        no_stub_customer => 1);
    my @z = map { ($now - 2 * $DAY - $_ * 1000, "w_$_") } 1 .. 1200;
    $r->zadd('lg:{acct:acct_lim_many}:prov', @z[$_ * 200 .. $_ * 200 + 199])
        for 0 .. 11;
    $r->zadd('lg:{acct:acct_lim_many}:prov', $now - 3_600_000, 'today');

    my $b = $p->answer($p->limits($a), 200, 'limits');
    is($b->{limits}{monthly}{used}, 1201, 'monthly: 1201 used');
    is($b->{limits}{daily}{used}, 1, 'daily: 1 used');
    is($b->{limits}{monthly}{resets_at}, iso($now - 2 * $DAY - 1_200_000
                                             + 30 * $DAY),
       'monthly resets when the oldest leaves');
    # full (a limit under the count): the slot frees when line
    # used - limit, oldest first, leaves (the limit-th newest)
    $r->hset('lg:{acct:acct_lim_many}', monthly_limit => 1100);
    $b = $p->answer($p->limits($a), 200, 'limits, window full');
    is($b->{limits}{monthly}{used}, 1201, 'full: 1201 used');
    is($b->{limits}{monthly}{remaining}, 0, 'full: none left');
    is($b->{limits}{monthly}{resets_at}, iso($now - 2 * $DAY - 1_099_000
                                             + 30 * $DAY),
       'full: resets when line 101 (oldest first) leaves');
    is($b->{limits}{daily}{resets_at}, iso($now - 3_600_000 + $DAY),
       'daily: when the one line of today leaves');
};

subtest 'window edges seen by limits' => sub {
    my $now = now_ms();
    my $a = $p->account('acct_lim_edge', no_stub_customer => 1);
    $r->zadd('lg:{acct:acct_lim_edge}:prov', $now - $DAY + 1500, 'in_day',
             $now - $DAY - 1000, 'out_day', $now - 30 * $DAY + 1500,
             'in_month', $now - 30 * $DAY - 1000, 'out_month');
    my $b = $p->answer($p->limits($a), 200, 'limits');
    is($b->{limits}{daily}{used}, 1, '24 h - 1.5 s counts, 24 h + 1 s not');
    is($b->{limits}{monthly}{used}, 3, '30 d - 1.5 s counts, 30 d + 1 s not');
};

subtest 'limits set to nonsense fall back to the defaults' => sub {
    my $a = $p->account('acct_lim_bad', no_stub_customer => 1);
    $r->hset('lg:{acct:acct_lim_bad}', daily_limit => 'many',
             monthly_limit => -1);
    my $b = $p->answer($p->limits($a), 200, 'limits');
    is($b->{limits}{daily}{limit}, 4, 'daily: the default');
    is($b->{limits}{monthly}{limit}, 12, 'monthly: the default');
};

subtest 'the operator API\'s overrides are read' => sub {
    my $tx = $s->op(PUT => '/accounts/acct_lim_op', {plan => 'inbound_only',
        stripeCustomerId => 'cus_op', api_provision_daily => 7,
        api_provision_monthly => 20});
    is($tx->res->code, 200, 'the account put through the operator API')
        or diag($tx->res->body);
    $tx = $s->op(POST => '/accounts/acct_lim_op/credentials');
    is($tx->res->code, 201, 'its credentials issued') or diag($tx->res->body);
    my $c = $tx->res->json // {};
    ok($c->{key_id} && $c->{secret}, 'a key id and a secret');

    my $a = {key_id => $c->{key_id}, secret => $c->{secret}};
    my $b = $p->answer($p->limits($a), 200, 'limits');
    is($b->{limits}{daily}{limit}, 7, 'api_provision_daily');
    is($b->{limits}{monthly}{limit}, 20, 'api_provision_monthly');
};

subtest '401, 403, 405' => sub {
    my $tx = $s->ua->get($s->url($LG::Provision::LIMITS));
    $p->error_is($tx, 401, undef, 'no credentials');

    my $a = $p->account('acct_lim_plan', plan => 'standard',
                        no_stub_customer => 1);
    $p->error_is($p->limits($a), 403, undef, 'not inbound_only');

    $a = $p->account('acct_lim_m', no_stub_customer => 1);
    $tx = $s->ua->post($s->url($LG::Provision::LIMITS) => $p->headers($a));
    $p->error_is($tx, 405, undef, 'POST limits');
};

subtest 'limits write nothing' => sub {
    my $a = $p->account('acct_lim_ro', no_stub_customer => 1);
    $r->zadd('lg:{acct:acct_lim_ro}:prov', now_ms() - 1000, 'w');
    my $before = redis_dump($r);
    $p->answer($p->limits($a), 200, 'limits') for 1 .. 3;
    is_deeply(redis_dump($r), $before, 'Redis unchanged');
};

done_testing();
