# HEAD on every GET endpoint is GET's answer without its body (RFC 9110
# 9.3.2): the same authentication and rate limit, the same status and
# headers (Content-Length the length GET's body has), no body, and nothing
# written to Redis but what GET writes (the rate window). HEAD on the
# line request's URI is a read, never the manage path. HEAD on a
# POST-only endpoint stays a 405; Allow lists HEAD wherever it lists GET.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;
use LG::Lines;
use LG::Provision;

my $s = LG::Stack->new(WS_RATE => '100r/m')->start;
my $l = LG::Lines->new($s);
my $p = LG::Provision->new($s);
my $r = $s->redis;

# the headers an answer is compared on (the request id differs)
my @SAME = qw(Content-Type Content-Length Cache-Control RateLimit-Policy
              Allow WWW-Authenticate Vary);

# Redis less the rate windows, which GET and HEAD alike count in
sub state {
    my $d = redis_dump($r);
    delete $d->{$_} for grep { /gcra|:rl:|ratelimit|:window/ } keys %$d;
    return $d;
}

# GET, then HEAD: the same answer but the body; HEAD wrote nothing
sub like_get {
    my ($name, $call) = @_;
    my $get = $call->('GET');
    my $before = state();
    my $head = $call->('HEAD');
    is($head->res->code, $get->res->code,
       "$name: HEAD's status is GET's (" . $get->res->code . ')');
    for my $h (@SAME) {
        is($head->res->headers->header($h), $get->res->headers->header($h),
           "$name: $h");
    }
    is($head->res->headers->content_length, length $get->res->body,
       "$name: Content-Length is the length of GET's body");
    like($head->res->headers->header('X-Request-Id') // '',
         qr/^[0-9a-f]{32}$/, "$name: X-Request-Id");
    is($head->res->body, '', "$name: no body");
    is_deeply(state(), $before, "$name: HEAD wrote nothing");
    return ($get, $head);
}

my $w = $l->workspace('org_head');
my $id = $l->created($w);

subtest 'the Lines API' => sub {
    like_get('line request',
             sub { $l->req($w, $_[0] => "/api/line-requests/$id") });
    like_get('by-user', sub { $l->req($w, $_[0] => '/api/lines/by-user') });
    my $h = $w->{clerk} // $w;
    like_get('check-availability', sub {
        $l->req($h, $_[0] => "/api/lines/check-availability?id=$id")
    });
    like_get('an unknown line request',
             sub { $l->req($w, $_[0] => '/api/line-requests/' . 'b' x 24) });
    like_get('a bad id',
             sub { $l->req($w, $_[0] => '/api/line-requests/bad') });
    like_get('no credential', sub {
        $s->ua->start($s->ua->build_tx($_[0] => $s->url('/api/lines/by-user')))
    });
};

subtest 'HEAD on a line request is a read, not the manage path' => sub {
    my $before = state();
    my $tx = $l->req($w, HEAD => "/api/line-requests/$id");
    is($tx->res->code, 200, 'HEAD: 200');
    is_deeply(state(), $before, 'the line request as it was');
};

subtest 'HEAD is counted by the rate limit as GET is' => sub {
    my $v = $l->workspace('org_head_rl');
    my @r = map {
        my $tx = $l->req($v, $_ => '/api/lines/by-user');
        (($tx->res->headers->header('RateLimit') // '') =~ /;r=(\d+);/)[0]
    } qw(GET HEAD GET HEAD);
    is_deeply(\@r, [map { $r[0] - $_ } 0 .. 3],
              'each call, GET or HEAD, one token') or diag "@r";
};

subtest 'the Provisioning API: account limits' => sub {
    my $a = $p->account('acct_head');
    like_get('limits', sub {
        $p->_tx($_[0] => '/accounts/limits', $p->headers($a))
    });
};

subtest 'the operator API' => sub {
    for my $path ('/inventory', '/workspaces/org_head',
                  '/workspaces/org_head/keys', '/provisioning',
                  '/reconciliation', '/workspaces/org_nope') {
        like_get("operator $path", sub { $s->op($_[0] => $path) });
    }
    my $tx = $s->op(HEAD => '/reconciliation/run');
    is($tx->res->code, 405, 'HEAD on a POST-only route: 405');
    is($tx->res->headers->header('Allow'), 'POST', 'Allow: POST');
    $tx = $s->op(DELETE => '/workspaces/org_head');
    is($tx->res->headers->header('Allow'), 'GET, HEAD, PUT',
       'Allow lists HEAD with GET');
};

subtest 'POST-only endpoints: HEAD is a 405 naming POST' => sub {
    my $before = state();
    for my $path ('/api/line-requests', '/accounts/lines/provision-preview',
                  '/accounts/lines/provision-confirm', '/webhooks/stripe') {
        my $tx = $s->ua->start($s->ua->build_tx(HEAD => $s->url($path)));
        is($tx->res->code, 405, "HEAD $path: 405");
        is($tx->res->headers->header('Allow'), 'POST', "HEAD $path: Allow");
        is($tx->res->body, '', "HEAD $path: no body");
    }
    is_deeply(state(), $before, 'nothing written');
};

done_testing;
