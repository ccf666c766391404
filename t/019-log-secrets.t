# No credential reaches a log (docs/security.md, "Logs"): every path that
# takes or makes one runs once, its refusals too, and the error log, the
# access log and /metrics are scanned for each secret used: workspace API
# keys (issued, presented, unknown), Clerk tokens (Bearer and __session
# cookie, valid and refused), the Provisioning API's key id and secret
# (right and wrong), a rotated pair's new secret, the preview token, the
# operator token (right and wrong), the webhook secret and a signature,
# the Stripe key, an Idempotency-Key. Bodies that do not parse carry a
# secret too (jansson's error names the text near the fault).
#
# Where nginx is built --with-debug (Debian's is), the error log is at
# debug: nginx itself then writes every request header and the header
# block of each Stripe call there (docs/security.md says so), so that log
# is scanned in linegate's own lines (every level, debug included) and
# in every line above debug; without it, at info, all of it.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(hmac_sha256_hex);
use Mojo::JSON qw(encode_json);
use LG::Stack;
use LG::Lines qw(body);
use LG::Provision;

my $nginx = $ENV{LG_NGINX} // '/usr/sbin/nginx';
my $debug = `$nginx -V 2>&1` =~ /--with-debug/;

my $s = LG::Stack->new(LOG_LEVEL => $debug ? 'debug' : 'info')->start;
my $l = LG::Lines->new($s);
my $p = LG::Provision->new($s);
my %secret = (
    'the operator token' => $s->operator_token,
    'the webhook secret' => $s->webhook_secret,
    'the Stripe key'     => 'sk_test_linegate',
);

sub bearer { return {Authorization => "Bearer $_[0]"} }

# the Lines API: a key and a Clerk token, accepted and refused
my $w = $l->workspace('org_logs');
$secret{'an API key'} = $w->{key};
(my $jwt = $w->{clerk}{Authorization}) =~ s/^Bearer //;
$secret{"a Clerk token's signature"} = (split /\./, $jwt)[2];
$secret{'an Idempotency-Key'} = 'idem-' . LG::Stack::random_token(24);

my $tx = $l->create($w, body(channelType => 'email', email => 'l@example.com'),
                    'Idempotency-Key' => $secret{'an Idempotency-Key'});
is($tx->res->code, 201, 'a paid creation') or diag $tx->res->body;
my $id = eval { $tx->res->json->{id} } // 'lr_none';
$l->get($w, $id);
$l->list($w);
$l->check($w, $id);
$l->req($w->{clerk}, GET => '/api/lines/by-user');
$l->req({Cookie => "__session=$jwt", Origin => 'https://evil.example',
         'Content-Type' => 'application/json'},
        POST => '/api/line-requests', body());

my $unknown = 'tuco_' . LG::Stack::random_token(40);
$secret{'an unknown API key'} = $unknown;
is($l->req(bearer($unknown), GET => '/api/lines/by-user')->res->code, 401,
   'an unknown key: 401');
my $forged = "${jwt}x";
is($l->req(bearer($forged), GET => '/api/lines/by-user')->res->code, 401,
   'a forged token: 401');
$l->req({Cookie => "__session=$forged"}, GET => '/api/lines/by-user');
$l->req($w, POST => '/api/line-requests', \"{\"firstName\": \"$unknown");

# a Stripe call that fails: its refusal is logged
$l->fault(status => 500, count => 3);
$l->create($w, body(channelType => 'email', email => 'm@example.com'));
$l->clear_faults;

# the Provisioning API: a pair, right and wrong, and its preview token
$p->inventory($p->numbers(3));
my $a = $p->account('acct_logs');
$secret{'a provisioning secret'} = $a->{secret};
my $token = $p->token($a);
$secret{'a preview token'} = $token;
is($p->confirm($a, $token)->res->code, 200, 'a confirm');
$p->confirm($a, 'lpv_' . LG::Stack::random_token(40));
$p->limits($a);
my $wrong = {%$a, secret => 'sbs_' . LG::Stack::random_token(40)};
$secret{'a wrong provisioning secret'} = $wrong->{secret};
is($p->preview($wrong)->res->code, 401, 'a wrong secret: 401');
$p->_tx(POST => '/accounts/lines/provision-preview', $p->headers($a),
        "{\"x\": \"$a->{secret}");

# the operator API: credentials rotated, a key issued and revoked, a
# wrong token
$tx = $s->op(POST => '/accounts/acct_logs/credentials');
is($tx->res->code, 201, 'credentials rotated') or diag $tx->res->body;
$secret{'a rotated secret'} = eval { $tx->res->json->{secret} } // 'none';
$tx = $s->op(POST => '/workspaces/org_logs/keys');
my $issued = eval { $tx->res->json } // {};
$secret{'an issued API key'} = $issued->{key} // 'none';
is($s->op(DELETE => "/workspaces/org_logs/keys/"
                   . ($issued->{keyId} // 'none'))->res->code, 200,
   'the key revoked');
my $bad_op = LG::Stack::random_token(32);
$secret{'a wrong operator token'} = $bad_op;
is($s->ua->get($s->url('/_linegate/inventory') => bearer($bad_op))
       ->res->code, 401, 'a wrong operator token: 401');

# a webhook, signed and not
my $event = encode_json({id => 'evt_logs', object => 'event',
    type => 'charge.succeeded', api_version => '2025-03-31.basil',
    created => time, livemode => \0, data => {object => {id => 'ch_1'}}});
my $t = time;
my $sig = hmac_sha256_hex("$t.$event", $s->webhook_secret);
$secret{'a webhook signature'} = $sig;
for my $v1 ($sig, 'a' x 64) {
    $s->ua->post($s->url('/webhooks/stripe') => {
        'Content-Type' => 'application/json',
        'Stripe-Signature' => "t=$t,v1=$v1"} => $event);
}

my $metrics = $s->ua->get($s->url('/metrics'))->res->body;

# the last lines written (a worker logs after it answers)
sleep 1;

# an entry may span lines (nginx's debug dump of a header block)
my @lines = split /\n(?=\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d )/, $s->error_log;
my @scanned = $debug ? grep { !/\[debug\]/ || /linegate: / } @lines : @lines;
ok(@scanned > 20, scalar(@scanned) . ' error log entries scanned'
                  . ($debug ? ' (at debug)' : ''));
ok(!$debug || grep({ /\[debug\].*linegate: / } @lines),
   'at debug: linegate\'s own debug lines among them');
my $error_log = join "\n", @scanned;
my $access_log = $s->access_log;

for my $what (sort keys %secret) {
    my $v = $secret{$what};
    ok(length $v >= 16, "$what: a value to look for");
    unlike($error_log, qr/\Q$v\E/, "$what: not in the error log");
    unlike($access_log, qr/\Q$v\E/, "$what: not in the access log");
    unlike($metrics, qr/\Q$v\E/, "$what: not in /metrics");
}

done_testing;
