#!/usr/bin/perl
# A Stripe answer whose status line is not an HTTP status (SPEC 1, 3.4):
# "HTTP/1.1 000", which nginx's parser takes (any three digits) and hands
# on as status 0, from a proxy or a broken middlebox before Stripe. The
# module took status 0 for "no answer recorded yet" and its request
# waited for the call's end forever: no answer to the client, the number
# and slot held until the client went away. It is a call with no answer
# (Stripe's outcome unknown once the request was sent): the customer read
# answers 502 with the number back; the subscription POST is asked again
# with the same Idempotency-Key and body, then 502 and queued for
# reconciliation, never recorded as bought.
use strict;
use warnings;
use lib 't/lib';

use IO::Socket::INET;
use POSIX ();
use Test::More;
use Time::HiRes qw(time);
use LG::Stack;
use LG::Provision;

my ($port) = LG::Stack::_free_ports(1);
my $LOG = "/tmp/lg-t229-$$.log";

# A Stripe of raw bytes: the customer cus_card answers 200 with a card,
# everything else "HTTP/1.1 000"; each request's line and Idempotency-Key
# go to $LOG.
my $srv = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
                                Listen => 16, ReuseAddr => 1)
    or die "listen: $!";
my $pid = fork() // die "fork: $!";

if ($pid == 0) {
    while (my $c = $srv->accept) {
        my ($head, $body) = ('', '');
        while ($head !~ /\r\n\r\n/) {
            last unless sysread($c, $head, 4096, length $head);
        }
        ($head, $body) = split /\r\n\r\n/, $head, 2;
        my ($len) = $head =~ /^content-length:\s*(\d+)/mi;
        while (length($body // '') < ($len // 0)) {
            last unless sysread($c, $body, 4096, length $body);
        }
        my ($line) = $head =~ /^(\S+ \S+)/;
        my ($key) = $head =~ /^idempotency-key:\s*(\S+)/mi;
        if (open my $fh, '>>', $LOG) {
            print $fh "$line " . ($key // '-') . ' ' . ($body // '') . "\n";
            close $fh;
        }
        my ($status, $json) = $line =~ m{^GET /v1/customers/cus_card\b}
            ? ('200 OK', '{"id":"cus_card","object":"customer",'
                         . '"invoice_settings":{"default_payment_method":'
                         . '"pm_card"}}')
            : ('000 OK', '{"id":"sub_zero","object":"subscription",'
                         . '"status":"active"}');
        print $c "HTTP/1.1 $status\r\nContent-Type: application/json\r\n"
                 . 'Content-Length: ' . length($json)
                 . "\r\nConnection: close\r\n\r\n$json";
        close $c;
    }
    POSIX::_exit(0);
}

close $srv;

my $s = LG::Stack->new(STRIPE_URL => "http://127.0.0.1:$port",
                       STRIPE_TIMEOUT => '2s')->start;
my $p = LG::Provision->new($s);
my $r = $s->redis;

$p->inventory('+14155550100', '+14155550101');

sub calls {
    open my $fh, '<', $LOG or return ();
    my @c = map { [split / /, $_, 4] } grep { /\S/ } <$fh>;
    close $fh;
    unlink $LOG;
    return @c;
}

sub released {
    my ($id, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->scard('lg:{fleet}:inventory'), 2, "$name: the number is back");
    is($r->zcard("lg:{acct:$id}:prov"), 0, "$name: slot freed");
    is_deeply($p->lines($id), {}, "$name: no line");
}

subtest 'the customer read answered 000: 502, nothing held' => sub {
    my $a = $p->account('acct_zero_get', customer => 'cus_zero',
                        no_stub_customer => 1);
    my $tok = $p->token($a);
    calls();
    my $t0 = time;
    my $tx = $p->confirm($a, $tok);
    ok(!$tx->error || $tx->res->code, 'answered')
        or diag('no answer after ' . int(time - $t0) . ' s');
    $p->error_is($tx, 502, 'billing_unavailable', 'GET customer 000');
    released('acct_zero_get', 'GET customer 000');
    my @c = calls();
    is(scalar(grep { $_->[0] eq 'POST' } @c), 0, 'nothing bought');
    like($s->error_log,
         qr{Stripe GET "/_stripe/v1/customers/cus_zero" got no whole answer},
         'logged as no answer');
};

subtest 'the subscription answered 000 twice: 502, queued, not bought'
    => sub {
    my $a = $p->account('acct_zero_post', customer => 'cus_card',
                        no_stub_customer => 1);
    my $tok = $p->token($a);
    calls();
    my $tx = $p->confirm($a, $tok);
    ok(!$tx->error || $tx->res->code, 'answered');
    $p->error_is($tx, 502, 'billing_unavailable', 'POST 000');
    released('acct_zero_post', 'POST 000');
    my @post = grep { $_->[0] eq 'POST' } calls();
    is(scalar @post, 2, 'the POST asked again once');
    is($post[0][2], $post[1][2], 'with the same Idempotency-Key');
    is($post[0][3], $post[1][3], 'and the same body');
    my @q = $p->queued_of('acct_zero_post');
    is(scalar @q, 1, 'queued for reconciliation');
    is($q[0]{reason}, 'stripe_outcome_unknown', 'its outcome unknown');
};

$s->stop;
kill 'TERM', $pid;
waitpid $pid, 0;
unlink $LOG;

done_testing();
