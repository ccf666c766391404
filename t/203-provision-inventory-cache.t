# linegate_inventory_cache (docs/directives.md): a worker that saw
# numbers in the inventory trusts it for that long and leaves the
# preview's look (SRANDMEMBER) out; "none" is never trusted, and a confirm whose
# CLAIM finds none makes the worker ask again at once. One worker, so
# that what it saw is what the next request meets.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep time);
use LG::Stack;
use LG::Test;
use LG::Provision;

my $s = LG::Stack->new(WORKERS => 1,
                       HTTP_EXTRA => 'linegate_inventory_cache 1s;')->start;
my $p = LG::Provision->new($s, known => 1);
my $r = $s->redis;
my $INV = 'lg:{fleet}:inventory';

$p->inventory($p->numbers(3));

# the previews' looks at the inventory (SRANDMEMBER), on one Redis (a
# cluster's MONITORs are t/038's)
sub scards {
    my ($call) = @_;
    my ($cmds) = $s->redis_traffic($call);
    return scalar grep { /"SRANDMEMBER"/i } @$cmds;
}

subtest 'numbers seen: the next previews skip the look' => sub {
    plan skip_all => 'MONITOR read on one Redis'
        if $s->topology eq 'cluster';
    my $a = $p->account('acct_ic_skip');
    sleep 1.1;    # whatever an earlier preview saw has expired
    is(scards(sub { $p->answer($p->preview($a), 200, 'first') }), 1,
       'the first preview asks');
    is(scards(sub { $p->answer($p->preview($a), 200, 'second') }), 0,
       'the next one within the time does not');
    sleep 1.1;
    is(scards(sub { $p->answer($p->preview($a), 200, 'later') }), 1,
       'past the time: asked again');
};

subtest 'run dry: the confirm says so, and previews ask again' => sub {
    my $a = $p->account('acct_ic_dry');
    $p->answer($p->preview($a), 200, 'numbers there: seen');
    my @all = $r->smembers($INV);
    $r->del($INV);

    # within the time the preview still says 200 (documented): the
    # confirm's CLAIM decides, atomically
    my $tok = $p->token($a);
    $p->error_is($p->confirm($a, $tok), 503, 'no_lines_available',
                 'the confirm finds none');
    is($r->zcard("lg:{acct:$a->{id}}:prov"), 0, 'the slot freed');
    $p->error_is($p->preview($a), 503, 'no_lines_available',
                 'the next preview asks again at once');

    # "none" is never trusted: stocked again, seen at once
    $r->sadd($INV, @all);
    $p->answer($p->preview($a), 200, 'stocked again: 200 at once');
};

subtest 'run dry unseen: 503 once the time is over' => sub {
    my $a = $p->account('acct_ic_late');
    $p->answer($p->preview($a), 200, 'numbers there: seen');
    my @all = $r->smembers($INV);
    $r->del($INV);
    my $t0 = time;
    my $tx = $p->preview($a);
    ok($tx->res->code == 200 || time - $t0 >= 1,
       'within the time: still 200 (' . $tx->res->code . ')');
    sleep 1.1;
    $p->error_is($p->preview($a), 503, 'no_lines_available',
                 'past the time: 503');
    $r->sadd($INV, @all);
};

done_testing;
