#!/usr/bin/perl
# Redis killed under load: every request is answered, 200 or 503 with
# Retry-After in JSON, none waits longer than the command timeout allows
# (no worker stalls), and 200s come back when Redis does, without a reload.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Mojo::IOLoop;
use Time::HiRes qw(time);
use Test::More;

use LG::Stack;

my $s = LG::Stack->new->start;
my $url = $s->url('/_linegate/inventory');
my %auth = (Authorization => 'Bearer ' . $s->operator_token);
my $ua = $s->ua;

my (%status, @slow, $bad_503, $after_up);
my $concurrency = 32;
my $t0 = time;
my ($killed_at, $back_at);

# keep $concurrency requests in flight until $until
sub fire {
    my ($until) = @_;
    return if time > $until;
    my $sent = time;
    $ua->get($url => \%auth => sub {
        my (undef, $tx) = @_;
        my $code = $tx->res->code // 0;
        my $took = time - $sent;
        $status{$code}++;
        push @slow, $took if $took > 1.5;
        if ($code == 503) {
            $bad_503++ unless ($tx->res->headers->header('Retry-After') // '')
                              eq '1'
                          && ($tx->res->json // {})->{code}
                             eq 'STORE_UNAVAILABLE';
        }
        $after_up++ if $code == 200 && $back_at && $sent > $back_at + 1;
        fire($until);
    });
}

my $until = $t0 + 4.5;
fire($until) for 1 .. $concurrency;

Mojo::IOLoop->timer(1 => sub {
    kill 'KILL', $s->{pids}{redis};
    $killed_at = time;
});
Mojo::IOLoop->timer(2 => sub {
    waitpid $s->{pids}{redis}, 0;
    delete $s->{pids}{redis};
    $s->start_redis;
    $back_at = time;
});
Mojo::IOLoop->timer(6 => sub { Mojo::IOLoop->stop });
Mojo::IOLoop->start;

my $total = 0;
$total += $_ for values %status;
note(join ', ', map { "$_: $status{$_}" } sort keys %status);

ok($total > 100, "many requests were made ($total)");
is_deeply([sort grep { $_ != 200 && $_ != 503 } keys %status], [],
          'every answer is 200 or 503');
ok($status{503}, 'Redis down gave 503s');
ok(!$bad_503, 'every 503 is JSON STORE_UNAVAILABLE with Retry-After: 1');
is(scalar @slow, 0, 'no request waited more than 1.5 s (no stall)')
    or diag("slow: @slow");
ok($after_up, '200s came back after Redis restarted, without a reload');
unlike($s->error_log, qr/\[(alert|emerg)\]/, 'no worker crashed');

done_testing;
