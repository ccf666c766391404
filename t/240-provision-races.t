# Races with real parallel requests (SPEC 3.2, 3.4): a token is used once,
# limits hold under bursts, a number goes to exactly one purchase. Two
# nginx workers share the load, so the requests really overlap.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Mojo::Promise;
use Mojo::UserAgent;
use LG::Stack;
use LG::Test;
use LG::Provision qw(now_ms);

my $s = LG::Stack->new->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

my $ua = Mojo::UserAgent->new(connect_timeout => 10, inactivity_timeout => 30,
                              request_timeout => 30, max_connections => 0);

sub post_p {
    my ($path, $a, @content) = @_;
    return $ua->start_p($ua->build_tx(POST => $s->url($path)
                                      => $p->headers($a) => @content));
}

sub codes {
    my %c;
    $c{ $_->res->code }++ for @_;
    return \%c;
}

sub subs_of {
    my ($id) = @_;
    return grep { ($_->{metadata}{account_id} // '') eq $id }
           $p->subscriptions;
}

$p->inventory($p->numbers(200));

subtest '30 parallel confirms of one token: one line, one charge' => sub {
    my $a = $p->account('acct_race_tok', daily => 100, monthly => 100);
    my $tok = $p->token($a);
    my $inv = $r->scard('lg:{fleet}:inventory');

    my @txs = $p->parallel(map { $p->confirm_req($a, $tok) } 1 .. 30);

    is_deeply(codes(@txs), {200 => 1, 410 => 29}, 'one 200, 29 x 410');
    my ($ok) = grep { $_->res->code == 200 } @txs;
    $p->answer($ok, 200, 'the winner');
    my ($lost) = grep { $_->res->code == 410 } @txs;
    $p->error_is($lost, 410, 'token_expired', 'a loser');

    is(scalar keys %{ $p->lines('acct_race_tok') }, 1, 'one line');
    is(scalar subs_of('acct_race_tok'), 1, 'one subscription at Stripe');
    is($r->scard('lg:{fleet}:inventory'), $inv - 1, 'one number taken');
    is($r->zcard('lg:{acct:acct_race_tok}:prov'), 1, 'one slot counted');
};

subtest '30 parallel preview+confirm pairs, daily limit 3' => sub {
    my $a = $p->account('acct_race_pairs', daily => 3);
    my $inv = $r->scard('lg:{fleet}:inventory');
    my (@pv, @cf);

    my @chains = map {
        post_p($LG::Provision::PREVIEW, $a)->then(sub {
            my ($tx) = @_;
            push @pv, $tx;
            my $tok = $tx->res->code == 200
                      ? $tx->res->json->{preview_token} : undef;
            return $tok ? post_p($LG::Provision::CONFIRM, $a,
                                 json => {preview_token => $tok})
                        : undef;
        })->then(sub { push @cf, $_[0] if $_[0] });
    } 1 .. 30;
    Mojo::Promise->all(@chains)->wait;

    is(scalar @pv, 30, '30 previews answered');
    my $c = codes(@cf);
    is($c->{200}, 3, 'exactly 3 confirms bought a line');
    is(scalar(@cf) - 3, $c->{429} // 0, 'every other confirm got 429');
    is((codes(@pv)->{429} // 0) + scalar(@cf), 30,
       'every pair was refused at preview or confirm');
    for my $tx (grep { $_->res->code == 429 } @pv, @cf) {
        is($tx->res->json->{error}, 'daily_limit_reached', '429 daily');
        last;
    }

    is(scalar keys %{ $p->lines('acct_race_pairs') }, 3, '3 lines');
    is(scalar subs_of('acct_race_pairs'), 3, '3 subscriptions');
    is($r->zcard('lg:{acct:acct_race_pairs}:prov'), 3, '3 slots');
    is($r->scard('lg:{fleet}:inventory'), $inv - 3, '3 numbers taken');
    is_deeply($p->reservations('acct_race_pairs'), [], 'no reservation');
};

subtest '10 tokens, 10 parallel confirms, daily limit 3' => sub {
    my $a = $p->account('acct_race_burst', daily => 3);
    my @tok = map { $p->token($a) } 1 .. 10;

    my @txs = $p->parallel(map { $p->confirm_req($a, $_) } @tok);

    is_deeply(codes(@txs), {200 => 3, 429 => 7}, '3 x 200, 7 x 429');
    my ($no) = grep { $_->res->code == 429 } @txs;
    $p->error_is($no, 429, 'daily_limit_reached', 'a refused confirm',
                 qr/^Maximum 3 lines can be added per day via API$/);
    ok($no->res->headers->header('Retry-After') > 86_000,
       'Retry-After: about a day');
    is(scalar keys %{ $p->lines('acct_race_burst') }, 3, '3 lines');
    is(scalar subs_of('acct_race_burst'), 3, '3 subscriptions');
};

subtest 'a monthly limit holds under a burst too' => sub {
    my $a = $p->account('acct_race_month', daily => 50, monthly => 12);
    $r->zadd('lg:{acct:acct_race_month}:prov',
             map { (now_ms() - (2 + $_) * 86_400_000, "old_$_") } 1 .. 10);
    my @tok = map { $p->token($a) } 1 .. 2;
    push @tok, map { $p->token($a) } 1 .. 6;

    my @txs = $p->parallel(map { $p->confirm_req($a, $_) } @tok);

    is_deeply(codes(@txs), {200 => 2, 429 => 6}, '2 x 200, 6 x 429');
    my ($no) = grep { $_->res->code == 429 } @txs;
    is($no->res->json->{error}, 'monthly_limit_reached', 'monthly');
};

subtest 'two accounts race for the last number, 10 rounds' => sub {
    my $x = $p->account('acct_race_x', daily => 100, monthly => 100);
    my $y = $p->account('acct_race_y', daily => 100, monthly => 100);
    my @stock = $r->smembers('lg:{fleet}:inventory');
    my %won;

    for my $round (1 .. 10) {
        $r->del('lg:{fleet}:inventory');
        my $last = sprintf '+1212555%04d', $round;
        $r->sadd('lg:{fleet}:inventory', $last);
        my ($tx_tok, $ty_tok) = ($p->token($x), $p->token($y));

        # who sends first alternates: either may win
        my @req = ($p->confirm_req($x, $tx_tok), $p->confirm_req($y, $ty_tok));
        @req = reverse @req if $round % 2;
        my @txs = $p->parallel(@req);
        my $c = codes(@txs);
        is_deeply($c, {200 => 1, 503 => 1}, "round $round: one each")
            or next;
        my ($w) = grep { $_->res->code == 200 } @txs;
        my ($l) = grep { $_->res->code == 503 } @txs;
        is($w->res->json->{phone_number}, $last, 'the winner got it');
        is($l->res->json->{error}, 'no_lines_available', 'the loser: 503')
            if $round == 1;
        $won{ $w->req->headers->header('sb-api-key-id') }++;
        is($r->scard('lg:{fleet}:inventory'), 0, 'the inventory is empty');
    }

    my $bought = 0;
    $bought += grep { $_->{phone_number} =~ /^\+1212555/ }
               values %{ $p->lines($_) } for qw(acct_race_x acct_race_y);
    is($bought, 10, '10 numbers, 10 lines, none shared');
    note('wins: ' . join ', ', map { "$_=$won{$_}" } sort keys %won);
    is(scalar(@{ $p->reservations('acct_race_x') })
       + scalar(@{ $p->reservations('acct_race_y') }), 0,
       'no reservation left');
    $r->sadd('lg:{fleet}:inventory', @stock);
};

subtest 'a line number is never sold twice' => sub {
    my (%n, $total);
    for my $k ($r->keys('lg:{acct:*}:line:*')) {
        $n{ $r->hget($k, 'phone_number') }++;
        $total++;
    }
    is(scalar keys %n, $total, "$total lines, $total numbers");
    my @sold = grep { $r->sismember('lg:{fleet}:inventory', $_) } keys %n;
    is(scalar @sold, 0, 'none of them is still in the inventory');
};

done_testing();
