# A time in the 30-day window that no clock gives (a corrupt score such as
# 1e300, found by t/fuzz's redis_reply target: converting it to int64_t
# was undefined behaviour; or inf, which ZADD takes as "+inf" and Redis
# answers as "inf": it was a 500 for every preview and limits of the
# account, while the confirm counted it): it counts, frees no slot anyone
# can wait for, and both credential paths answer the same.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;
use LG::Provision;

my $s = LG::Stack->new->start;
my $r = $s->redis;

my $n = 0;

for my $score ('1e300', '+inf') {
    for my $what (qw(limits preview)) {
        my %got;

        for my $known (0, 1) {
            my $p = LG::Provision->new($s, known => $known);
            $p->inventory($p->numbers(2, 415600 + $n++));
            my $a = $p->account("acct_corrupt_${what}_${known}_$n");
            $r->zadd("lg:{acct:$a->{id}}:prov", $score, 'line_far');

            my $tx = $p->$what($a);
            my $h = $tx->res->headers;
            $got{$known} = [$tx->res->code, $h->header('RateLimit') // '-',
                            $h->header('RateLimit-Policy') // '-'];
        }

        is_deeply($got{1}, $got{0},
                  "$score, $what: both credential paths answer the same")
            or diag explain \%got;
        is($got{0}[0], 200, "$score, $what: answered");
        is($got{0}[1], '"daily";r=2;t=0, "monthly";r=9;t=0',
           "$score, $what: the line counts, no reset anyone can wait for");
    }
}

done_testing();
