# conf/production.conf.example: nginx -t accepts it (offline: no name is
# resolved at load), it carries every linegate directive the test
# configuration needs and the production settings docs/deploy.md
# promises, and, run for real (TLS, Redis, the Stripe stub behind the
# Stripe location's variable proxy_pass and rewrite), it serves a paid
# line request end to end.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);
use LG::Production;

my $example = LG::Production::_slurp($LG::Production::EXAMPLE);
(my $active = $example) =~ s/^\s*#.*\n//mg;    # without the comments

my $s = LG::Stack->new->start;
my $so = $ENV{LG_MODULE}
         // "$LG::Stack::ROOT/build/ngx_http_linegate_module.so";
my $load = "load_module $so;";

subtest 'nginx -t accepts the example' => sub {
    my $p = LG::Production->new($s, load => $load);
    my ($rc, $out) = $p->nginx_t;
    is($rc, 0, 'exit 0') or diag $out;
    like($out, qr/test is successful/, 'nginx says so');
};

subtest 'nginx -t reads the site files' => sub {
    my $p = LG::Production->new($s, load => $load);
    unlink $p->dir . '/etc/operator-token' or die $!;
    my ($rc, $out) = $p->nginx_t;
    isnt($rc, 0, 'without the operator token file: refused');
    like($out, qr/operator-token/, 'the message names the file');

    $p = LG::Production->new($s, load => $load);
    LG::Production::_spew($p->dir . '/etc/clerk-jwks.json', "{}\n");
    ($rc, $out) = $p->nginx_t;
    isnt($rc, 0, 'an empty JWKS: refused') or diag $out;
};

subtest 'every linegate directive of the test configuration' => sub {
    my $dev = LG::Production::_slurp("$LG::Stack::ROOT/conf/linegate.conf.in");
    my %need = map { $_ => 1 } $dev =~ /^\s*(linegate_\w+)\s/mg;
    ok(keys %need > 15, 'the test configuration names its directives');
    for my $d (sort keys %need) {
        # secrets: their _file form, a file of /etc/nginx/linegate/
        my $re = $d =~ /^linegate_(?:operator_token|webhook_secret)$/
               ? qr{^\s*\Q$d\E_file /etc/nginx/linegate/[\w-]+;}m
               : qr/^\s*\Q$d\E\s/m;
        like($active, $re, "$d: set");
    }
    like($active, qr{^\s*linegate_redis \S+;}m,
         'linegate_redis: no password inline');
    like($active,
         qr{^\s*linegate_redis_password_file /etc/nginx/linegate/[\w-]+;}m,
         'the Redis password from a file');
    # the Stripe key too, kept out of nginx -T (no proxy_set_header of it)
    like($active,
         qr{^\s*linegate_stripe_key_file /etc/nginx/linegate/[\w-]+;}m,
         'the Stripe key from a file');
    # and every directive of its Stripe location, in the example's
    my ($dev_stripe) = $dev =~ m{location /_stripe/ \{(.*?)\n        \}}s;
    my ($stripe) = $active =~ m{location /_stripe/ \{(.*?)\n    \}}s;
    my @in = $dev_stripe =~ /^\s*(\w+)/mg;
    ok(@in > 5, 'the Stripe location of the test configuration');
    like($stripe, qr/^\s*\Q$_\E\b/m, "Stripe location: $_") for @in;

    my %api = map { $_ => 1 } $dev =~ /linegate_api (\w+);/g;
    for my $a (sort keys %api) {
        like($active, qr/linegate_api \Q$a\E;/, "linegate_api $a: served");
    }
};

subtest 'production settings' => sub {
    my ($stripe) = $active =~ m{(location /_stripe/ \{.*?\n    \})}s;
    ok($stripe, 'the Stripe location') or return;
    for my $re (qr/^\s*internal;/m,
                qr{^\s*proxy_pass https://\$stripe_upstream;}m,
                qr{^\s*rewrite \^/_stripe\(/\.\*\)\$ \$1 break;}m,
                qr/^\s*resolver \S+ valid=\d+s/m,
                qr/^\s*proxy_ssl_server_name on;/m,
                qr/^\s*proxy_ssl_name api\.stripe\.com;/m,
                qr/^\s*proxy_ssl_verify on;/m,
                qr{^\s*proxy_ssl_trusted_certificate
                   \s/etc/ssl/certs/ca-certificates\.crt;}mx,
                qr/^\s*proxy_http_version 1\.1;/m,
                qr/^\s*proxy_set_header Connection "";/m,
                qr/^\s*subrequest_output_buffer_size \d+k;/m) {
        like($stripe, $re, "Stripe location: $re");
    }
    like($example, qr/^\#\ upstream\ stripe\ \{\n (\#.*\n)*
                       \#\s+server\ api\.stripe\.com:443\ resolve;\n
                       \#\s+keepalive\ \d+;/mx,
         'the keepalive upstream, for nginx >= 1.27.3');

    my ($op) = $active =~ m{(location /_linegate/ \{.*?\})}s;
    like($op, qr/allow 127\.0\.0\.1;.*deny all;.*linegate_api operator;/s,
         'the operator API behind allow/deny');
    my ($m) = $active =~ m{(location = /metrics \{.*?\})}s;
    like($m, qr/allow 127\.0\.0\.1;.*deny all;.*linegate_api metrics;/s,
         'metrics behind allow/deny');
    like($active, qr/^\s*listen 443 ssl/m, 'TLS listener');
    like($active, qr/^\s*large_client_header_buffers 4 16k;/m,
         'room for Clerk tokens');
    my ($fmt) = $active =~ /^(log_format linegate .*?;)$/ms;
    like($fmt, qr/\$linegate_$_\b/, "log format: \$linegate_$_")
        for qw(tenant auth outcome);
    like($fmt, qr/\$request_id/, 'log format: $request_id');
    unlike($active, qr/sk_live_|whsec_\w/, 'no secret in the example');
    unlike($stripe, qr/Authorization/,
           'the Stripe location sets no Authorization (the key file\'s)');
};

subtest 'it serves, over TLS, with Stripe behind the rewrite' => sub {
    my $pw = LG::Production::require_password($s,
                                              LG::Stack::random_token(24));
    my $p = LG::Production->new($s, load => $load, stripe => 1,
                                redis_password => $pw);
    my ($rc, $out) = $p->nginx_t;
    is($rc, 0, 'nginx -t') or diag $out;
    $p->start;
    my $n = () = $p->error_log =~ /linegate: redis connected/g;
    is($n, 2, 'both workers connected to Redis, with the password');

    my $tx = $p->op(PUT => '/workspaces/org_prod',
                    {plan => 'growth', subscriptionStatus => 'active',
                     stripeCustomerId => 'cus_org_prod'});
    answer_is($tx, 200, 'operator PUT over TLS');
    $tx = $p->op(POST => '/workspaces/org_prod/keys');
    my $key = answer_is($tx, 201, 'API key issued')->{key};
    ok($s->stub(POST => '/_stub/customers',
                {id => 'cus_org_prod', card => 1})->res->is_success,
       'stub customer');

    # growth includes no email line: a Stripe invoice, through /_stripe/
    $tx = $p->ua->post($p->url('/api/line-requests')
        => {Authorization => "Bearer $key"}
        => json => body(channelType => 'email', email => 'ada@example.com'));
    my $b = answer_is($tx, 201, 'paid line request');
    is($b->{status}, 'awaiting_payment', 'awaiting_payment')
        or diag $p->error_log;
    like($b->{invoiceId} // '', qr/^in_/, 'a Stripe invoice id');

    my $log = $s->stub(GET => '/_stub/state')->res->json->{log} // [];
    ok((grep { $_->{path} =~ m{^/v1/invoices} } @$log),
       'the stub was asked for /v1/invoices (the prefix rewritten away)')
        or diag explain [map { $_->{path} } @$log];

    $tx = $p->ua->get($p->url('/metrics'));
    is($tx->res->code, 200, 'metrics, from an allowed address');
    like($tx->res->body, qr/^linegate_http_answers_total\{/m,
         'metrics: Prometheus counters');

    like($p->access_log,
         qr/tenant=org_prod auth=api_key outcome=awaiting_payment/,
         'the access log carries the $linegate_* variables');
    $p->stop;
};

# docker/compose.yaml mounts ./site/linegate as /etc/nginx/linegate: its
# header lists the files to put there, which are the ones the example
# reads (docs/deploy.md's table), and no other
subtest 'docker/compose.yaml names the site files the example reads' => sub {
    my $compose = LG::Production::_slurp(
        "$LG::Stack::ROOT/docker/compose.yaml");
    my ($header) = $compose =~ /\A((?:#.*\n)+)/;
    my %read = map { $_ => 1 }
               $active =~ m{/etc/nginx/linegate/([\w.-]+/?)}g;
    ok(keys %read >= 6, 'the example reads ' . join(' ', sort keys %read));
    my %listed = map { $_ => 1 }
                 $header =~ m{site/linegate/([\w.-]+/?)}g;
    is_deeply([sort keys %listed], [sort keys %read],
              'the header lists those files');
};

done_testing;
