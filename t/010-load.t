# The module loads, the stack answers, and nginx -t refuses a bad
# configuration with a message that names the problem. The directive
# reference (docs/directives.md) lists every directive the module
# registers, with its context, parameters and default, and nginx -t
# accepts every nginx example of docs/*.md and README.md.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use LG::Docs;
use LG::Stack;
use LG::Test;

my $s = LG::Stack->new->start;
my $dir = $s->dir;

subtest 'the stack answers' => sub {
    my $tx = $s->ua->get($s->url('/static'));
    is($tx->res->code, 200, 'static location: 200');
    is($tx->res->body, '{"ok":true}', 'static location: body');

    my $body = answer_is($s->op(GET => '/inventory'), 200, 'operator GET');
    is_deeply($body, {count => 0, numbers => [], cursor => undef},
              'operator GET: body');

    is($s->stub(GET => '/_stub/health')->res->json->{ok}, 1,
       'the Stripe stub answers');
    is($s->redis->ping, 'PONG', 'Redis answers');
    like($s->error_log, qr/linegate: redis connected/,
         'the workers connected to Redis');
};

subtest 'nginx -t accepts the rendered configuration' => sub {
    my ($rc, $out) = $s->nginx_t($s->render);
    is($rc, 0, 'exit 0') or diag $out;
    like($out, qr/test is successful/, 'nginx says so');
};

# a client_max_body_size below linegate_max_body: bodies between them
# would get nginx's 413, which nginx -t says (the configuration taken)
subtest 'client_max_body_size below linegate_max_body: a warning' => sub {
    my $extra = "location /small/ { client_max_body_size 8k; "
              . "linegate_max_body 16k; linegate_api operator; }\n"
              . "location /fits/ { client_max_body_size 16k; "
              . "linegate_max_body 16k; linegate_api operator; }\n";
    my ($rc, $out) = $s->nginx_t($s->render(SERVER_EXTRA => $extra));
    is($rc, 0, 'taken') or diag $out;
    like($out, qr/\[warn\] "client_max_body_size" 8192 is below "linegate_max_body" 16384 in location "\/small\/"/,
         'the location named') or diag $out;
    unlike($out, qr/client_max_body_size.*"\/fits\/"/,
           'none for a location whose limits agree');
    ($rc, $out) = $s->nginx_t($s->render);
    unlike($out, qr/client_max_body_size/, 'none in the shipped one');
};

# a configuration with one directive taken out
sub without {
    my ($directive, %over) = @_;
    my $conf = $s->render(%over);
    $conf =~ s/^\s*\Q$directive\E\s[^;]*;\n//m
        or BAIL_OUT("no $directive in the template");
    return $conf;
}

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$name: $!";
    print $fh $text;
    close $fh;
    return "$dir/$name";
}

system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
       . "-out $dir/weak.pem 2>/dev/null && openssl pkey -in $dir/weak.pem "
       . "-pubout -out $dir/weak.pub 2>/dev/null") == 0
    or BAIL_OUT('openssl could not make a 1024-bit key');

my $weak = Crypt::PK::RSA->new("$dir/weak.pub")->export_key_jwk('public', 1);

my @refused = (
    # a word is not printed: it may be a secret without "password="
    ['Redis address that is not one',
     $s->render(REDIS => 'not-an-address'),
     qr/\[emerg\] invalid Redis address \(argument 1\): expected ip:port, host:port or unix:\/path \(a secret takes "password="\)/],
    ['Redis address without a port',
     $s->render(REDIS => '127.0.0.1'),
     qr/\[emerg\] invalid Redis address "127\.0\.0\.1" \(expected ip:port/],
    ['linegate_api without linegate_redis',
     without('linegate_redis'),
     qr/\[emerg\] "linegate_redis" is required when a location has "linegate_api"/],
    ['the Lines API without linegate_price_phone',
     without('linegate_price_phone'),
     qr/\[emerg\] "linegate_price_phone" is required when the Lines API is served/],
    ['an operator location without linegate_operator_token',
     without('linegate_operator_token'),
     qr/\[emerg\] "linegate_operator_token" is required when the operator API is served/],
    ['an operator token of 15 characters',
     $s->render(OPERATOR_TOKEN => 'x' x 15),
     qr/\[emerg\] "linegate_operator_token" must be at least 16 characters/],
    # no Authorization header can present these: every call was a 401
    ['an operator token that ends with a space',
     $s->render(OPERATOR_TOKEN => '"' . 'x' x 20 . ' "'),
     qr/\[emerg\] "linegate_operator_token" must not begin or end with a space nor hold a control character/],
    ['an operator token that begins with a space',
     $s->render(OPERATOR_TOKEN => '" ' . 'x' x 20 . '"'),
     qr/\[emerg\] "linegate_operator_token" must not begin or end with a space/],
    ['an operator token with a tab',
     $s->render(OPERATOR_TOKEN => '"' . 'x' x 10 . '\t' . 'x' x 10 . '"'),
     qr/\[emerg\] "linegate_operator_token" must not begin or end with a space nor hold a control character/],
    ['an unknown linegate_api name',
     $s->render(SERVER_EXTRA => 'location /x { linegate_api bogus; }'),
     qr/\[emerg\] unknown linegate API "bogus"/],
    ['a Clerk key file that does not exist',
     $s->render(CLERK_KEY => "$dir/missing.json"),
     qr/\[emerg\] invalid Clerk key file: \S*missing\.json: cannot open/],
    ['a Clerk key file that is neither JSON nor PEM',
     $s->render(CLERK_KEY => write_file('junk.txt', "hello\n")),
     qr/\[emerg\] invalid Clerk key file: \S*junk\.txt: neither a JWKS/],
    ['a 1024-bit PEM Clerk key',
     $s->render(CLERK_KEY => "$dir/weak.pub"),
     qr/\[emerg\] invalid Clerk key file: \S*weak\.pub: .*1024 bits, at least 2048/],
    ['a 1024-bit key in a JWKS',
     $s->render(CLERK_KEY => write_file('weak.json',
         Mojo::JSON::encode_json({keys => [{%$weak, kid => 'weak'}]}))),
     qr/\[emerg\] invalid Clerk key file: \S*weak\.json: .*1024 bits/],
    ['a workspace rate that is not one',
     $s->render(WS_RATE => 'fast'),
     qr/\[emerg\] invalid rate "fast" \(expected e\.g\. 200r\/m\)/],
    ['a workspace rate of 0',
     $s->render(WS_RATE => '0r/s'),
     qr/\[emerg\] invalid rate "0r\/s"/],
    ['an API key cache longer than a second',
     $s->render(HTTP_EXTRA => 'linegate_api_key_cache 2s;'),
     qr/\[emerg\] "linegate_api_key_cache" must be at most 1s/],
    ['an inventory cache longer than a minute',
     $s->render(HTTP_EXTRA => 'linegate_inventory_cache 61s;'),
     qr/\[emerg\] "linegate_inventory_cache" must be at most 60000ms, not 61000ms/],
    ['a preview token that expires at once',
     $s->render(HTTP_EXTRA => 'linegate_preview_ttl 0;'),
     qr/\[emerg\] "linegate_preview_ttl" value must be between 1 and 86400 seconds, not "0"/],
    ['an idempotency key forgotten while its creation may still run',
     $s->render(HTTP_EXTRA => 'linegate_idempotency_ttl 0;'),
     qr/\[emerg\] "linegate_idempotency_ttl" value must be between 60 and 2592000 seconds, not "0"/],
    ['an idempotency key kept for more than 30 days',
     $s->render(HTTP_EXTRA => 'linegate_idempotency_ttl 31d;'),
     qr/\[emerg\] "linegate_idempotency_ttl" value must be between 60 and 2592000 seconds, not "31d"/],
    ['a Clerk leeway of more than a minute',
     $s->render(HTTP_EXTRA => 'linegate_clerk_leeway 5m;'),
     qr/\[emerg\] "linegate_clerk_leeway" value must be between 0 and 60 seconds, not "5m"/],
    ['an API key cache of one entry',
     $s->render(HTTP_EXTRA => 'linegate_api_key_cache_size 1;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "1" \(entries, 2 to 1048576\)/],
    ['an API key cache size that is not a number',
     $s->render(HTTP_EXTRA => 'linegate_api_key_cache_size many;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "many" \(entries, 2 to 1048576\)/],

    # the limits docs/directives.md gives each directive
    ['an API key cache larger than 16,777,216 entries',
     $s->render(HTTP_EXTRA => 'linegate_api_key_cache_size 16777217;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "16777217" \(entries, 2 to 1048576\)/],
    ['several Redis addresses, neither sentinels nor a cluster',
     $s->render(REDIS => '127.0.0.1:6379 127.0.0.1:6380'),
     qr/\[emerg\] several Redis addresses need "sentinel=<master name>"/],
    ['sentinel= with cluster=on',
     $s->render(REDIS => '127.0.0.1:6379 sentinel=m cluster=on'),
     qr/\[emerg\] "linegate_redis" directive takes "sentinel=" or "cluster=on", not both/],
    ['a Redis timeout of 0',
     $s->render(REDIS_KEEPALIVE => '0'),
     qr/\[emerg\] linegate: Redis timeouts must be greater than 0 \("linegate_redis_keepalive" is 0\)/],
    ['a WAIT for 65 replicas',
     $s->render(HTTP_EXTRA => 'linegate_redis_wait 65 100ms;'),
     qr/\[emerg\] invalid number of replicas "65" \(1 to 64\)/],
    ['a WAIT timeout of 0',
     $s->render(HTTP_EXTRA => 'linegate_redis_wait 1 0;'),
     qr/\[emerg\] invalid timeout "0"/],
    ['a Stripe location that is no URI prefix',
     $s->render =~ s{linegate_stripe_location /_stripe/;}
                    {linegate_stripe_location _stripe/;}r,
     qr/\[emerg\] "linegate_stripe_location" must be a URI prefix/],
    ['provisioning limits over 1,000,000',
     $s->render(HTTP_EXTRA => 'linegate_provision_limits 1000001 10;'),
     qr/\[emerg\] invalid limits "1000001 10"/],
    ['line daily limits over 1,000,000',
     $s->render(HTTP_EXTRA => 'linegate_line_daily_limits 20 1000001;'),
     qr/\[emerg\] invalid limits "20 1000001"/],
    ['a limit zone name of 65 characters',
     $s->render(HTTP_EXTRA => 'linegate_limit_zone ' . ('z' x 65)
                              . ' key=$remote_addr rate=1r/s;'),
     qr/\[emerg\] invalid linegate_limit_zone name "z{65}"/],
    ['a burst over 100,000,000',
     $s->render(HTTP_EXTRA => 'linegate_limit_zone z key=$remote_addr '
                              . 'rate=1r/s burst=100000001;'),
     qr/\[emerg\] invalid burst value "burst=100000001" \(0 to 100000000\)/],
    ['a local fallback shared by 1001 nodes',
     $s->render(HTTP_EXTRA => 'linegate_limit_on_error local share=1001;'),
     qr/\[emerg\] invalid share "share=1001" \(the fleet's node count, 1 to 1000\)/],
    ['share= without local',
     $s->render(HTTP_EXTRA => 'linegate_limit_on_error open share=2;'),
     qr/\[emerg\] invalid parameter "share=2" \(only "local" takes share=<nodes>\)/],
);

# Every other refusal docs/directives.md promises, one case each: the
# directive, the value, the message nginx -t prints. A duplicate
# directive is "is duplicate" (nginx's own words) wherever a second one
# would silently win.
sub extra { $s->render(HTTP_EXTRA => join "\n", @_) }
sub in_server { $s->render(SERVER_EXTRA => join "\n", @_) }

# the template's Stripe location, its proxy_pass replaced by $pass
sub stripe_pass {
    my ($pass) = @_;
    my $conf = $s->render;
    $conf =~ s/^(\s*)proxy_pass [^;]*;$/$1$pass/m
        or BAIL_OUT('no proxy_pass in the template');
    return $conf;
}
my $zone = 'linegate_limit_zone z key=$remote_addr rate=1r/s;';
my $no_api_no_redis = $s->render(api => 0, HTTP_EXTRA => "$zone\n"
                                 . 'linegate_limit zone=z;')
    =~ s/^\s*linegate_redis\s[^;]*;\n//mr;
my $dup = sub { qr/\[emerg\] "\Q$_[0]\E" directive is duplicate/ };

push @refused, (
    # contexts: http only, location only
    ['linegate_redis in a server', in_server('linegate_redis 127.0.0.1:1;'),
     qr/\[emerg\] "linegate_redis" directive is not allowed here/],
    ['linegate_api at http level', extra('linegate_api operator;'),
     qr/\[emerg\] "linegate_api" directive is not allowed here/],
    ['linegate_workspace_rate in a location',
     in_server('location /w { linegate_workspace_rate 1r/s; }'),
     qr/\[emerg\] "linegate_workspace_rate" directive is not allowed here/],
    ['linegate_limit_zone in a server',
     in_server('linegate_limit_zone y key=$remote_addr rate=1r/s;'),
     qr/\[emerg\] "linegate_limit_zone" directive is not allowed here/],

    # one content handler a location (before, the last one silently won)
    ['linegate_api, then proxy_pass',
     in_server('location /x { linegate_api operator; '
               . 'proxy_pass http://127.0.0.1:1; }'),
     qr/\[emerg\] "linegate_api operator" and another content handler \(proxy_pass, fastcgi_pass\.\.\.\) in location "\/x"/],
    ['proxy_pass, then linegate_api',
     in_server('location /x { proxy_pass http://127.0.0.1:1; '
               . 'linegate_api metrics; }'),
     qr/\[emerg\] "linegate_api metrics" and another content handler/],

    # duplicates
    ['two linegate_api in a location',
     in_server('location /x { linegate_api operator; linegate_api metrics; }'),
     $dup->('linegate_api')],
    ['two linegate_redis', extra('linegate_redis 127.0.0.1:1;'),
     $dup->('linegate_redis')],
    ['two linegate_workspace_rate', extra('linegate_workspace_rate 10r/s;'),
     $dup->('linegate_workspace_rate')],
    ['two linegate_redis_command_timeout',
     extra('linegate_redis_command_timeout 1s;'),
     $dup->('linegate_redis_command_timeout')],
    ['two linegate_redis_wait',
     extra('linegate_redis_wait 1 100ms;', 'linegate_redis_wait 2 100ms;'),
     $dup->('linegate_redis_wait')],
    ['two linegate_api_key_cache',
     extra('linegate_api_key_cache 1s;', 'linegate_api_key_cache 1s;'),
     $dup->('linegate_api_key_cache')],
    ['two linegate_lines_cache', extra('linegate_lines_cache 64k;'),
     $dup->('linegate_lines_cache')],
    ['two linegate_provision_limits',
     extra('linegate_provision_limits 1 2;', 'linegate_provision_limits 1 2;'),
     $dup->('linegate_provision_limits')],
    ['two linegate_clerk_key', extra('linegate_clerk_key ' . $s->jwks_path
                                     . ';'),
     $dup->('linegate_clerk_key')],
    ['two linegate_reconcile_auto',
     extra('linegate_reconcile_auto off;', 'linegate_reconcile_auto off;'),
     $dup->('linegate_reconcile_auto')],
    ['two linegate_stripe_location', extra('linegate_stripe_location /s/;'),
     $dup->('linegate_stripe_location')],
    ['two linegate_max_body in a location',
     in_server('location /x { linegate_max_body 1k; linegate_max_body 2k; }'),
     $dup->('linegate_max_body')],
    ['two linegate_limit_status',
     extra('linegate_limit_status 503;', 'linegate_limit_status 503;'),
     $dup->('linegate_limit_status')],
    ['two linegate_limit_log_level',
     extra('linegate_limit_log_level warn;', 'linegate_limit_log_level warn;'),
     $dup->('linegate_limit_log_level')],
    ['two linegate_limit_on_error',
     extra('linegate_limit_on_error open;', 'linegate_limit_on_error open;'),
     $dup->('linegate_limit_on_error')],
    ['a zone twice in one level', extra($zone, 'linegate_limit zone=z;',
                                        'linegate_limit zone=z;'),
     qr/\[emerg\] duplicate linegate_limit "zone=z"/],
    ['a zone defined twice', extra($zone, $zone),
     qr/\[emerg\] duplicate linegate_limit_zone "z"/],
    ['a zone parameter given twice',
     extra('linegate_limit_zone y key=$remote_addr rate=1r/s rate=2r/s;'),
     qr/\[emerg\] duplicate "rate=" parameter/],

    # sizes and times
    ['linegate_max_body 0', extra('linegate_max_body 0;'),
     qr/\[emerg\] "linegate_max_body" must be between 1 and 1m, not 0/],
    ['linegate_max_body 2m', extra('linegate_max_body 2m;'),
     qr/\[emerg\] "linegate_max_body" must be between 1 and 1m, not 2097152/],
    ['linegate_max_body 1e12', extra('linegate_max_body 1e12;'),
     qr/\[emerg\] "linegate_max_body" directive invalid value/],
    ['linegate_max_body of an overflowing size',
     extra('linegate_max_body 99999999999999999999;'),
     qr/\[emerg\] "linegate_max_body" directive invalid value/],
    ['a negative linegate_max_body', extra('linegate_max_body -1;'),
     qr/\[emerg\] "linegate_max_body" directive invalid value/],
    ['a webhook tolerance of 0', extra('linegate_webhook_tolerance 0;'),
     qr/\[emerg\] "linegate_webhook_tolerance" value must be between 1 and 3600 seconds, not "0"/],
    ['a webhook tolerance over an hour',
     extra('linegate_webhook_tolerance 61m;'),
     qr/\[emerg\] "linegate_webhook_tolerance" value must be between 1 and 3600 seconds, not "61m"/],
    ['a Redis connect timeout of 0',
     extra('linegate_redis_connect_timeout 0;') =~ s/^\s*linegate_redis_connect_timeout 500ms;\n//mr,
     qr/\[emerg\] linegate: Redis timeouts must be greater than 0 \("linegate_redis_connect_timeout" is 0\)/],
    ['a Redis command timeout of 0', $s->render(REDIS_COMMAND_TIMEOUT => '0'),
     qr/\[emerg\] linegate: Redis timeouts must be greater than 0 \("linegate_redis_command_timeout" is 0\)/],
    ['a Redis command timeout that overflows',
     $s->render(REDIS_COMMAND_TIMEOUT => '99999999999999999999d'),
     qr/\[emerg\] "linegate_redis_command_timeout" directive invalid value/],
    # the largest times (before 2026-11-28 none: a huge one wrapped the
    # timer's ngx_msec_t, which fired at once)
    ['a Redis connect timeout over a minute',
     extra('linegate_redis_connect_timeout 61s;') =~ s/^\s*linegate_redis_connect_timeout 500ms;\n//mr,
     qr/\[emerg\] "linegate_redis_connect_timeout" must be at most 60000 ms, not "61s"/],
    ['a Redis command timeout of 100,000,000 days',
     $s->render(REDIS_COMMAND_TIMEOUT => '100000000d'),
     qr/\[emerg\] "linegate_redis_command_timeout" must be at most 60000 ms, not "100000000d"/],
    ['a Redis keepalive over 10 minutes', $s->render(REDIS_KEEPALIVE => '11m'),
     qr/\[emerg\] "linegate_redis_keepalive" must be at most 600000 ms, not "11m"/],
    ['a reconcile interval over an hour',
     $s->render(RECONCILE_INTERVAL => '61m'),
     qr/\[emerg\] "linegate_reconcile_interval" must be at most 3600000 ms, not "61m"/],
    ['a reconcile interval that wraps a timer',
     $s->render(RECONCILE_INTERVAL => '106751991167d'),
     qr/\[emerg\] "linegate_reconcile_interval" must be at most 3600000 ms/],
    ['a reconcile delay over a day', extra('linegate_reconcile_delay 25h;'),
     qr/\[emerg\] "linegate_reconcile_delay" must be at most 86400000 ms, not "25h"/],
    ['a lost_after over a day', extra('linegate_reconcile_lost_after 2d;'),
     qr/\[emerg\] "linegate_reconcile_lost_after" must be at most 86400000 ms, not "2d"/],
    # one Stripe call as a whole (a dripping answer is ended there)
    ['a Stripe timeout over 5 minutes', extra('linegate_stripe_timeout 6m;'),
     qr/\[emerg\] "linegate_stripe_timeout" must be at most 300000 ms, not "6m"/],
    ['a Stripe timeout under a second',
     extra('linegate_stripe_timeout 500ms;'),
     qr/\[emerg\] "linegate_stripe_timeout" must be at least 1000 ms, not "500ms"/],
    # where the Stripe calls go must keep their answers whole and let
    # them end (before 2026-11-28 nginx -t took these, and a purchase's
    # answer was cut, or aborted when its client left)
    ['a Stripe location whose buffer cuts answers',
     $s->render =~ s/subrequest_output_buffer_size 64k;/subrequest_output_buffer_size 8k;/r,
     qr/\[emerg\] "subrequest_output_buffer_size" 8192 of location "\/_stripe\/" \(the Stripe calls of "linegate_stripe_location \/_stripe\/", server ""\) must be at least 64k/],
    ['a Stripe location without proxy_ignore_client_abort',
     $s->render =~ s/^\s*proxy_ignore_client_abort on;\n//mr,
     qr/\[emerg\] "proxy_ignore_client_abort" must be on in location "\/_stripe\/" \(the Stripe calls of "linegate_stripe_location \/_stripe\/", server ""\): a client leaving would abort/],
    ['a location of its own for one kind of Stripe call',
     in_server('location /_stripe/v1/refunds { internal; '
               . 'proxy_pass http://127.0.0.1:1/v1/refunds; '
               . 'proxy_ignore_client_abort on; }'),
     qr/\[emerg\] "subrequest_output_buffer_size" \d+ of location "\/_stripe\/v1\/refunds"/],
    ['a regex location that takes some Stripe calls',
     in_server('location ~ ^/_stripe/v1/invoice { internal; '
               . 'proxy_pass http://127.0.0.1:1; '
               . 'subrequest_output_buffer_size 64k; }'),
     qr/\[emerg\] "proxy_ignore_client_abort" must be on in location "\^\/_stripe\/v1\/invoice"/],
    # the calls with an id in their path (an invoice's finalize and
    # void, a subscription read) reach what their bare path does not:
    # before 2026-11-28 only the bare paths were looked for, and these
    # cut answers were taken
    ['a location of its own for an invoice\'s finalize and void',
     in_server('location ~ ^/_stripe/v1/invoices/\w+/(finalize|void)$ { '
               . 'internal; proxy_pass http://127.0.0.1:1; '
               . 'proxy_ignore_client_abort on; }'),
     qr/\[emerg\] "subrequest_output_buffer_size" \d+ of location "\^\/_stripe\/v1\/invoices\/\\w\+\/\(finalize\|void\)\$"/],
    ['a regex location that takes the calls on one subscription',
     in_server('location ~ ^/_stripe/v1/subscriptions/sub_ { internal; '
               . 'proxy_pass http://127.0.0.1:1; '
               . 'subrequest_output_buffer_size 64k; }'),
     qr/\[emerg\] "proxy_ignore_client_abort" must be on in location "\^\/_stripe\/v1\/subscriptions\/sub_"/],
    # a Stripe location that passes the calls with another module than
    # the proxy: before, nginx -t took fastcgi_pass beside
    # proxy_ignore_client_abort on (which says nothing of fastcgi), and
    # without it said "proxy_ignore_client_abort must be on", which does
    # not make it a location that reaches Stripe
    ['a Stripe location with fastcgi_pass',
     stripe_pass('fastcgi_pass 127.0.0.1:9000;'),
     qr/\[emerg\] location "\/_stripe\/" \(the Stripe calls of "linegate_stripe_location \/_stripe\/", server ""\) passes them with "fastcgi_pass": it must be a "proxy_pass" location to Stripe, with "proxy_ignore_client_abort on"/],
    ['a Stripe location with fastcgi_pass, no proxy_ignore_client_abort',
     stripe_pass('fastcgi_pass 127.0.0.1:9000;')
         =~ s/^\s*proxy_ignore_client_abort on;\n//mr,
     qr/\[emerg\] location "\/_stripe\/" \(the Stripe calls of "linegate_stripe_location \/_stripe\/", server ""\) passes them with "fastcgi_pass": it must be a "proxy_pass" location/],
    ['a Stripe location with uwsgi_pass',
     stripe_pass('uwsgi_pass 127.0.0.1:9000;'),
     qr/\[emerg\] location "\/_stripe\/" .* passes them with "uwsgi_pass": it must be a "proxy_pass" location/],
    ['a Stripe location with grpc_pass',
     stripe_pass('grpc_pass grpc://127.0.0.1:9000;'),
     qr/\[emerg\] location "\/_stripe\/" .* passes them with "grpc_pass": it must be a "proxy_pass" location/],
    # with a variable, no module can tell fastcgi_pass from proxy_pass:
    # the message names both settings it needs
    ['a Stripe location with fastcgi_pass of a variable',
     stripe_pass('fastcgi_pass 127.0.0.1:$server_port;')
         =~ s/^\s*proxy_ignore_client_abort on;\n//mr,
     qr/\[emerg\] "proxy_ignore_client_abort" must be on in location "\/_stripe\/" \(the Stripe calls of "linegate_stripe_location \/_stripe\/", server ""\), which must pass them with "proxy_pass" \(not js_content, nor a \*_pass with variables\): a client leaving would abort/],
    ['reconcile_auto every 2 days',
     extra('linegate_reconcile_auto http://127.0.0.1:1/_linegate/ '
           . 'interval=2d;'),
     qr/\[emerg\] invalid interval "interval=2d": at least 1s, at most 1d/],
    ['a WAIT timeout as long as the command timeout',
     extra('linegate_redis_wait 1 500ms;'),
     qr/\[emerg\] "linegate_redis_wait" timeout 500 ms must be shorter than linegate_redis_command_timeout \(500 ms\)/],
    ['a WAIT for 0 replicas', extra('linegate_redis_wait 0 100ms;'),
     qr/\[emerg\] invalid number of replicas "0" \(1 to 64\)/],
    ['a WAIT for -1 replicas', extra('linegate_redis_wait -1 100ms;'),
     qr/\[emerg\] invalid number of replicas "-1" \(1 to 64\)/],
    ['a lost_after under a second',
     extra('linegate_reconcile_lost_after 999ms;'),
     qr/\[emerg\] "linegate_reconcile_lost_after" must be at least 1s/],
    ['a pushed time no longer than the time',
     extra('linegate_api_key_cache 500ms 500ms;'),
     qr/\[emerg\] "linegate_api_key_cache" pushed time 500 ms must be longer than its time/],
    ['a pushed time over 10 minutes',
     extra('linegate_api_key_cache 500ms 11m;'),
     qr/\[emerg\] "linegate_api_key_cache" pushed time 660000 ms must be/],
    ['a pushed time with the cache off',
     extra('linegate_api_key_cache 0 5m;'),
     qr/\[emerg\] "linegate_api_key_cache" pushed time 300000 ms must be longer than its time \(0 ms, not off\)/],
    ['an API key cache time that is not one',
     extra('linegate_api_key_cache soon;'),
     qr/\[emerg\] "linegate_api_key_cache": invalid time "soon"/],
    ['an API key cache of 0 entries',
     extra('linegate_api_key_cache_size 0;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "0" \(entries, 2 to 1048576\)/],
    ['a negative API key cache size',
     extra('linegate_api_key_cache_size -5;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "-5" \(entries, 2 to 1048576\)/],
    ['an API key cache size of 1e12',
     extra('linegate_api_key_cache_size 1000000000000;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "1000000000000"/],
    # the largest sizes, each worker's (before 2026-11-28 16,777,216
    # entries, ~2 GB a worker allocated at start, and a lines cache of
    # any size: "8192m" let every worker's table grow to 8 GB)
    ['an API key cache of 16,777,216 entries (~2 GB a worker)',
     extra('linegate_api_key_cache_size 16777216;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "16777216" \(entries, 2 to 1048576\)/],
    ['an API key cache of 1,048,577 entries',
     extra('linegate_api_key_cache_size 1048577;'),
     qr/\[emerg\] invalid linegate_api_key_cache_size "1048577"/],
    ['a lines cache of 8192m', $s->render(LINES_CACHE => '8192m'),
     qr/\[emerg\] invalid "linegate_lines_cache" "8192m": "off" or a size from 64k to 256m/],
    ['a lines cache over 256m', $s->render(LINES_CACHE => '262145k'),
     qr/\[emerg\] invalid "linegate_lines_cache" "262145k"/],
    ['a lines cache under 64k', $s->render(LINES_CACHE => '63k'),
     qr/\[emerg\] invalid "linegate_lines_cache" "63k": "off" or a size from 64k to 256m/],
    ['a lines cache that is not a size', $s->render(LINES_CACHE => 'on'),
     qr/\[emerg\] invalid "linegate_lines_cache" "on"/],
    ['a preview token kept more than a day',
     extra('linegate_preview_ttl 25h;'),
     qr/\[emerg\] "linegate_preview_ttl" value must be between 1 and 86400 seconds, not "25h"/],
    ['an idempotency key kept under a minute',
     extra('linegate_idempotency_ttl 59s;'),
     qr/\[emerg\] "linegate_idempotency_ttl" value must be between 60 and 2592000 seconds, not "59s"/],

    # numbers
    ['a workspace rate over 1,000,000 a second', $s->render(WS_RATE => '1000001r/s'),
     qr/\[emerg\] rate "1000001r\/s" too high \(at most 1000000r\/s\)/],
    ['a workspace rate its interval cannot keep',
     $s->render(WS_RATE => '750000r/s'),
     qr/\[emerg\] rate "750000r\/s" cannot be kept: a request's interval is whole microseconds, and 2 us is 500000 r\/s/],
    ['a workspace rate per minute its interval cannot keep',
     $s->render(WS_RATE => '45000000r/m'),
     qr/\[emerg\] rate "45000000r\/m" cannot be kept/],
    ['a workspace rate per hour', $s->render(WS_RATE => '10r/h'),
     qr/\[emerg\] invalid rate "10r\/h"/],
    ['a workspace rate of 1e12', $s->render(WS_RATE => '1000000000000r/s'),
     qr/\[emerg\] rate "1000000000000r\/s" too high/],
    ['a workspace lease of 0', $s->render(WS_RATE => '10r/s lease=0'),
     qr/\[emerg\] invalid lease "lease=0" \(a time from 1ms to 1s\)/],
    ['a workspace lease over a second', $s->render(WS_RATE => '10r/s lease=2s'),
     qr/\[emerg\] invalid lease "lease=2s" \(a time from 1ms to 1s\)/],
    ['a workspace rate parameter that is not lease=',
     $s->render(WS_RATE => '10r/s burst=5'),
     qr/\[emerg\] invalid parameter "burst=5"/],
    ['negative provisioning limits',
     extra('linegate_provision_limits -1 10;'),
     qr/\[emerg\] invalid limits "-1 10"/],
    ['line daily limits that are not numbers',
     extra('linegate_line_daily_limits many 50;'),
     qr/\[emerg\] invalid limits "many 50"/],
    ['a Redis db of 256', $s->render(REDIS => $s->redis_directive . ' db=256'),
     qr/\[emerg\] invalid Redis db "db=256" \(0 to 255\)/],
    ['a Redis db that is not a number',
     $s->render(REDIS => $s->redis_directive . ' db=x'),
     qr/\[emerg\] invalid Redis db "db=x"/],
    ['an empty Redis password=',
     $s->render(REDIS => '127.0.0.1:6379 password='),
     qr/\[emerg\] the Redis password "password=" is empty/],
    ['an empty sentinel_password=',
     $s->render(REDIS => '127.0.0.1:26379 sentinel=m sentinel_password='),
     qr/\[emerg\] the Sentinel password "sentinel_password=" is empty/],
    ['an unknown linegate_redis parameter',
     $s->render(REDIS => '127.0.0.1:6379 timeout=1'),
     qr/\[emerg\] invalid parameter "timeout=" in /],
    ['cluster= neither on nor off',
     $s->render(REDIS => '127.0.0.1:6379 cluster=yes'),
     qr/\[emerg\] invalid value "cluster=yes" \(cluster=on or off\)/],
    ['db= with cluster=on',
     $s->render(REDIS => '127.0.0.1:6379 cluster=on db=1'),
     qr/\[emerg\] "linegate_redis" directive cannot select a database/],
    ['a unix socket as a sentinel',
     $s->render(REDIS => 'unix:/tmp/s.sock sentinel=m'),
     qr/\[emerg\] a sentinel is reached over TCP, not "unix:\/tmp\/s\.sock"/],
    ['a unix socket as a cluster seed',
     $s->render(REDIS => 'unix:/tmp/s.sock cluster=on'),
     qr/\[emerg\] a Redis Cluster node is reached over TCP, not "unix:/],
    ['an empty unix socket path', $s->render(REDIS => 'unix:'),
     qr/\[emerg\] "linegate_redis" directive has an empty unix socket path/],
    ['linegate_redis with options only', $s->render(REDIS => 'db=1'),
     qr/\[emerg\] "linegate_redis" directive needs an address/],
    ['a price mapped twice',
     extra('linegate_plan_price price_plan_mini growth;'),
     qr/\[emerg\] price "price_plan_mini" is mapped to "mini" already/],
    ['user= twice', $s->render(REDIS => '127.0.0.1:6379 user=a user=b'),
     qr/\[emerg\] duplicate "user=" parameter/],
    # no AUTH without a password: the workers ran as Redis's default user
    ['user= without a password',
     $s->render(REDIS => '127.0.0.1:6379 user=linegate'),
     qr/\[emerg\] "linegate_redis \.\.\. user=linegate" needs a password: "password=" or "linegate_redis_password_file"/],
    ['db= twice', $s->render(REDIS => '127.0.0.1:6379 db=1 db=2'),
     qr/\[emerg\] duplicate "db=" parameter/],
    ['password= twice',
     $s->render(REDIS => '127.0.0.1:6379 password=a password=b'),
     qr/\[emerg\] duplicate "password=" parameter/],
    ['sentinel= twice',
     $s->render(REDIS => '127.0.0.1:26379 sentinel=a sentinel=b'),
     qr/\[emerg\] duplicate "sentinel=" parameter/],
    ['an unknown plan', extra('linegate_plan_price price_x enterprise;'),
     qr/\[emerg\] unknown plan "enterprise" \(mini, starter or growth\)/],
    ['linegate_fast_request_id neither on nor off',
     extra('linegate_fast_request_id yes;'),
     qr/\[emerg\] invalid value "yes" in "linegate_fast_request_id" directive, it must be "on" or "off"/],

    # what a served API needs
    ['the Lines API without linegate_stripe_location',
     without('linegate_stripe_location'),
     qr/\[emerg\] "linegate_stripe_location" is required when the Lines API is served/],
    ['the Lines API without linegate_price_email',
     without('linegate_price_email'),
     qr/\[emerg\] "linegate_price_email" is required when the Lines API is served/],
    ['the Provisioning API without linegate_price_agent_line',
     without('linegate_price_agent_line'),
     qr/\[emerg\] "linegate_price_agent_line" is required when the Provisioning API is served/],
    ['webhooks without linegate_webhook_secret',
     without('linegate_webhook_secret'),
     qr/\[emerg\] "linegate_webhook_secret" is required when Stripe webhooks are served/],
    ['linegate_clerk_key without linegate_clerk_issuer',
     without('linegate_clerk_issuer'),
     qr/\[emerg\] "linegate_clerk_issuer" is required when "linegate_clerk_key" is set/],

    # linegate_reconcile_auto
    ['reconcile_auto over https',
     extra('linegate_reconcile_auto https://127.0.0.1:1/_linegate/;'),
     qr/\[emerg\] "https:\/\/127\.0\.0\.1:1\/_linegate\/" is not an http:\/\/ URL/],
    ['reconcile_auto without the prefix\'s /',
     extra('linegate_reconcile_auto http://127.0.0.1:1/_linegate;'),
     qr/\[emerg\] "http:\/\/127\.0\.0\.1:1\/_linegate" must end with the operator API's prefix/],
    ['reconcile_auto to another host',
     extra('linegate_reconcile_auto http://10.0.0.1:1/_linegate/;'),
     qr/\[emerg\] "http:\/\/10\.0\.0\.1:1\/_linegate\/" is not a loopback address/],
    ['reconcile_auto every 999ms',
     extra('linegate_reconcile_auto http://127.0.0.1:1/_linegate/ '
           . 'interval=999ms;'),
     qr/\[emerg\] invalid interval "interval=999ms": at least 1s/],
    ['reconcile_auto with another parameter',
     extra('linegate_reconcile_auto http://127.0.0.1:1/_linegate/ every=1s;'),
     qr/\[emerg\] invalid parameter "every="/],
    # compared whole with azp and Origin: a trailing "/" matched nothing
    ['an authorized party with a trailing /',
     $s->render(CLERK_AZP => 'linegate_clerk_authorized_parties '
                . 'https://app.linegate.test https://admin.linegate.test/;'),
     qr/\[emerg\] "https:\/\/admin\.linegate\.test\/" is not an origin: scheme:\/\/host\[:port\], without a path/],
    ['an authorized party without a scheme',
     $s->render(CLERK_AZP => 'linegate_clerk_authorized_parties '
                . 'app.linegate.test;'),
     qr/\[emerg\] "app\.linegate\.test" is not an origin/],
    ['an authorized party as a wildcard',
     $s->render(CLERK_AZP => 'linegate_clerk_authorized_parties '
                . 'https://*.linegate.test;'),
     qr/\[emerg\] "https:\/\/\*\.linegate\.test" is not an origin/],
    # a port as browsers send it, or no token's azp could match
    (map {
        my ($what, $o) = @$_;
        ["an authorized party $what",
         $s->render(CLERK_AZP => "linegate_clerk_authorized_parties $o;"),
         qr/\[emerg\] "\Q$o\E" is not an origin/]
     } ['with an empty port', 'https://app.linegate.test:'],
       ['with a port with a leading 0', 'https://app.linegate.test:0443'],
       ['with port 0', 'http://localhost:0'],
       ['with port 65536', 'http://localhost:65536'],
       ['with two colons', 'http://localhost:80:80'],
       ['with an unbracketed IPv6 address', 'http://::1'],
       ['with an empty IPv6 address', 'http://[]:8080'],
       ['with letters in its IPv6 address', 'http://[::g]']),
    ['reconcile_auto waiting 500ms',
     extra('linegate_reconcile_auto http://127.0.0.1:1/_linegate/ '
           . 'timeout=500ms;'),
     qr/\[emerg\] invalid timeout "timeout=500ms": at least 1s, at most 1d/],
    ['reconcile_auto waiting 2 days',
     extra('linegate_reconcile_auto http://127.0.0.1:1/_linegate/ '
           . 'interval=1m timeout=2d;'),
     qr/\[emerg\] invalid timeout "timeout=2d": at least 1s, at most 1d/],
    ['reconcile_auto with two intervals',
     extra('linegate_reconcile_auto http://127.0.0.1:1/_linegate/ '
           . 'interval=1m interval=2m;'),
     qr/\[emerg\] duplicate "interval=" parameter/],
    ['reconcile_auto without linegate_stripe_location',
     $s->render(api => 0, HTTP_EXTRA => 'linegate_reconcile_auto '
                . 'http://127.0.0.1:1/_linegate/;',
                SERVER_EXTRA => 'location /_linegate/ '
                . '{ linegate_api operator; }')
         =~ s/^\s*linegate_stripe_location\s[^;]*;\n//mr,
     qr/\[emerg\] "linegate_reconcile_auto" calls the operator API/],
    # no operator API: worker 0 still called it every interval (before)
    ['reconcile_auto without any linegate_api',
     $s->render(api => 0, HTTP_EXTRA => 'linegate_reconcile_auto '
                . 'http://127.0.0.1:1/_linegate/;'),
     qr/\[emerg\] "linegate_reconcile_auto" calls the operator API, which reconciles through Stripe: it needs a "linegate_api operator;" location/],
    ['reconcile_auto with only the metrics API',
     $s->render(api => 0, HTTP_EXTRA => 'linegate_reconcile_auto '
                . 'http://127.0.0.1:1/_linegate/;',
                SERVER_EXTRA => 'location /_linegate/ '
                . '{ linegate_api metrics; }'),
     qr/\[emerg\] "linegate_reconcile_auto" calls the operator API/],

    # linegate_limit*
    ['a zone rate that is not one',
     extra('linegate_limit_zone y key=$remote_addr rate=fast;'),
     qr/\[emerg\] invalid rate "rate=fast" \(expected <n>r\/s, r\/m, r\/h or r\/d/],
    ['a zone rate over 1,000,000 r/s',
     extra('linegate_limit_zone y key=$remote_addr rate=1000001r/s;'),
     qr/\[emerg\] invalid rate "rate=1000001r\/s"/],
    ['a zone rate of 1e12',
     extra('linegate_limit_zone y key=$remote_addr rate=1000000000000r/s;'),
     qr/\[emerg\] invalid rate "rate=1000000000000r\/s"/],
    ['a zone rate its interval cannot keep',
     extra('linegate_limit_zone y key=$remote_addr rate=750000r/s;'),
     qr/\[emerg\] linegate_limit_zone "y": rate 750000 r\/s cannot be kept/],
    ['a negative burst',
     extra('linegate_limit_zone y key=$remote_addr rate=1r/s burst=-1;'),
     qr/\[emerg\] invalid burst value "burst=-1"/],
    ['a zone lease over a second',
     extra('linegate_limit_zone y key=$remote_addr rate=1r/s lease=2s;'),
     qr/\[emerg\] invalid lease "lease=2s"/],
    ['a zone key without variables',
     extra('linegate_limit_zone y key=all rate=1r/s;'),
     qr/\[emerg\] linegate_limit_zone "y": key "all" has no variables/],
    ['a zone without key=', extra('linegate_limit_zone y rate=1r/s burst=1;'),
     qr/\[emerg\] linegate_limit_zone "y" needs key= and rate=/],
    ['a zone name with a dot',
     extra('linegate_limit_zone a.b key=$remote_addr rate=1r/s;'),
     qr/\[emerg\] invalid linegate_limit_zone name "a\.b"/],
    ['a zone used and never defined', extra('linegate_limit zone=nowhere;'),
     qr/\[emerg\] linegate_limit zone "nowhere" is used in \S+:\d+ but never defined/],
    ['linegate_limit without zone=', extra('linegate_limit z;'),
     qr/\[emerg\] invalid parameter "z" \(expected zone=<name>\)/],
    ['nine zones at one level',
     extra(map { ("linegate_limit_zone z$_ key=\$remote_addr rate=1r/s;",
                  "linegate_limit zone=z$_;") } 1 .. 9),
     qr/\[emerg\] too many linegate_limit zones at "zone=z9" \(at most 8 per level\)/],
    ['linegate_limit without linegate_redis', $no_api_no_redis,
     qr/\[emerg\] "linegate_limit" needs "linegate_redis" in the http block/],
    ['a limit status of 399', extra('linegate_limit_status 399;'),
     qr/\[emerg\] invalid linegate_limit_status "399" \(a status from 400 to 599\)/],
    ['a limit status of 600', extra('linegate_limit_status 600;'),
     qr/\[emerg\] invalid linegate_limit_status "600"/],
    ['a limit log level of debug', extra('linegate_limit_log_level debug;'),
     qr/\[emerg\] invalid value "debug" in "linegate_limit_log_level" directive, it must be "info", "notice", "warn" or "error"/],
    ['an on_error of retry', extra('linegate_limit_on_error retry;'),
     qr/\[emerg\] invalid value "retry" \(expected closed, open or local\)/],
    ['a local share of 0', extra('linegate_limit_on_error local share=0;'),
     qr/\[emerg\] invalid share "share=0"/],
);

for my $case (@refused) {
    my ($name, $conf, $re) = @$case;
    my ($rc, $out) = $s->nginx_t($conf);
    isnt($rc, 0, "refused: $name");
    like($out, $re, "refused: $name: message") or diag $out;
}

# proxy_pass with a variable (production.conf.example's) sets nothing
# this module can read: taken with proxy_ignore_client_abort on, refused
# without, the message naming both settings; js_content (njs, when this
# nginx has it) is refused as a location without proxy_pass
subtest 'a Stripe location of proxy_pass with a variable, or js_content' => sub {
    my ($rc, $out) = $s->nginx_t(
        stripe_pass('proxy_pass http://127.0.0.1:$server_port;'));
    is($rc, 0, 'proxy_pass with a variable: taken') or diag $out;

    ($rc, $out) = $s->nginx_t(
        stripe_pass('proxy_pass http://127.0.0.1:$server_port;')
            =~ s/^\s*proxy_ignore_client_abort on;\n//mr);
    isnt($rc, 0, 'without proxy_ignore_client_abort: refused');
    like($out, qr/\[emerg\] "proxy_ignore_client_abort" must be on in location "\/_stripe\/" .*, which must pass them with "proxy_pass"/,
         'named') or diag $out;

    SKIP: {
        my ($js) = grep { -e } map { "$_/ngx_http_js_module.so" }
                   '/usr/lib/nginx/modules', '/usr/share/nginx/modules';
        skip 'njs is not in this nginx', 2 unless $js;
        require File::Temp;
        my $dir = File::Temp::tempdir(CLEANUP => 1);
        open my $fh, '>', "$dir/stripe.js" or die;
        print $fh "function call(r) { r.return(502); }\n"
                . "export default {call};\n";
        close $fh;
        my $conf = stripe_pass("js_import stripe from $dir/stripe.js; "
                               . 'js_content stripe.call;')
                       =~ s/^\s*proxy_ignore_client_abort on;\n//mr;
        ($rc, $out) = $s->nginx_t("load_module $js;\n" . $conf);
        isnt($rc, 0, 'js_content: refused');
        like($out, qr/which must pass them with "proxy_pass" \(not js_content/,
             'js_content: told to use proxy_pass') or diag $out;
    }
};

# Stripe calls that reach no proxied location fail cleanly (502): nginx
# -t warns, naming the path, and takes the configuration
subtest 'Stripe calls that reach no location are warned of' => sub {
    my $conf = $s->render;
    $conf =~ s/^\s*location \/_stripe\/ \{.*?^\s*\}\n//ms
        or BAIL_OUT('no Stripe location in the template');
    my ($rc, $out) = $s->nginx_t($conf);
    is($rc, 0, 'taken') or diag $out;
    like($out, qr/\[warn\] "linegate_stripe_location \/_stripe\/": "\/_stripe\/v1\/customers\/cus_0" of server "" reaches no location that passes it to Stripe/,
         'warned');

    # nested in the right one, or a ^~ prefix before a regex: taken
    ($rc, $out) = $s->nginx_t($s->render(SERVER_EXTRA =>
        'location ~ \.php$ { return 404; } '
        . 'location ^~ /_stripe/v1/subscriptions { internal; '
        . 'proxy_pass http://127.0.0.1:1; proxy_ignore_client_abort on; '
        . 'subrequest_output_buffer_size 128k; }'));
    is($rc, 0, 'a ^~ location of its own, well set: taken') or diag $out;
    unlike($out, qr/\[warn\].*linegate_stripe_location/, 'no warning');

    # "location /_stripe/v1/refunds/" with proxy_pass: nginx answers the
    # path without its "/" with its own 301 (auto_redirect), so every
    # refund fails; before 2026-11-28 that location was checked as the
    # one the call reaches, and nginx -t said nothing
    ($rc, $out) = $s->nginx_t($s->render(SERVER_EXTRA =>
        'location /_stripe/v1/refunds/ { internal; '
        . 'proxy_pass http://127.0.0.1:1/v1/refunds/; '
        . 'proxy_ignore_client_abort on; '
        . 'subrequest_output_buffer_size 64k; }'));
    is($rc, 0, 'a location that redirects the call: taken') or diag $out;
    like($out, qr/\[warn\] "linegate_stripe_location \/_stripe\/": "\/_stripe\/v1\/refunds" of server "" reaches no location that passes it to Stripe/,
         'a call nginx redirects: warned');

    # a path that reaches nothing is warned of, and the others still
    # checked (before 2026-11-28 the first warning ended the server's
    # check: this buffer that cuts invoices was taken)
    $conf = $s->render(SERVER_EXTRA =>
        'location /_stripe/v1/invoices { internal; '
        . 'proxy_pass http://127.0.0.1:1/v1/invoices; '
        . 'proxy_ignore_client_abort on; }');
    $conf =~ s/^\s*location \/_stripe\/ \{.*?^\s*\}\n//ms
        or BAIL_OUT('no Stripe location in the template');
    ($rc, $out) = $s->nginx_t($conf);
    isnt($rc, 0, 'some calls reach nothing, others a cut: refused');
    like($out, qr/\[emerg\] "subrequest_output_buffer_size" \d+ of location "\/_stripe\/v1\/invoices"/,
         'the cut named') or diag $out;
};

# A misspelt secret parameter is refused by its name alone: its value is
# a password, and nginx -t's message goes to the terminal and the error
# log (before 2026-11-28 'invalid parameter "passwd=<the password>"').
subtest 'a misspelt password= is refused without its value' => sub {
    my $secret = 'Sup3r-s3cret-value';
    for my $p ("passwd=$secret", "Password=$secret",
               "sentinel_passwd=$secret")
    {
        (my $name = $p) =~ s/=.*/=/s;
        my ($rc, $out) = $s->nginx_t($s->render(REDIS => "127.0.0.1:6379 $p"));
        isnt($rc, 0, "$name: refused");
        like($out, qr/\[emerg\] invalid parameter "\Q$name\E"/,
             "$name: named") or diag $out;
        unlike($out, qr/\Q$secret\E/, "$name: its value is not printed");
    }

    # a zone's parameters are named so too
    my ($rc, $out) = $s->nginx_t($s->render(HTTP_EXTRA =>
        'linegate_limit_zone y key=$remote_addr rate=1r/s brust=5;'));
    isnt($rc, 0, 'linegate_limit_zone brust=: refused');
    like($out, qr/\[emerg\] invalid parameter "brust="/,
         'linegate_limit_zone brust=: named') or diag $out;
};

# A secret given without its name ("password hunter2") is never printed:
# before 2026-11-28 it was taken for an address or a parameter, and
# nginx -t printed it ('invalid Redis address "<the password>": host not
# found', after asking the DNS for it; 'invalid parameter "<it>"').
subtest 'a secret given without password= is not printed' => sub {
    my $secret = 'Hunt3r2secret';
    for my $r ("127.0.0.1:6379 $secret sentinel=m",
               "127.0.0.1:6379 $secret cluster=on",
               "127.0.0.1:26379 password $secret sentinel=m",
               $secret,
               "127.0.0.1:6379 user=app $secret",
               "127.0.0.1:26379 sentinel=m sentinel_password=x $secret")
    {
        my ($rc, $out) = $s->nginx_t($s->render(REDIS => $r));
        isnt($rc, 0, "$r: refused");
        unlike($out, qr/\Q$secret\E/, "$r: the secret is not printed")
            or diag $out;
        like($out, qr/\[emerg\] invalid (?:Redis address|parameter) \(argument \d\)/,
             "$r: named by its place") or diag $out;
    }

    # an address's shape is still printed, with why
    my ($rc, $out) = $s->nginx_t($s->render(REDIS =>
        '127.0.0.1:26379 no-such-host.invalid:26379 sentinel=m'));
    like($out, qr/\[emerg\] invalid Redis address "no-such-host\.invalid:26379": host not found/,
         'an address refused is printed') or diag $out;
};

subtest 'the largest sizes are taken' => sub {
    for my $conf ($s->render(HTTP_EXTRA => 'linegate_api_key_cache_size 1048576;'),
                  $s->render(LINES_CACHE => '256m'))
    {
        my ($rc, $out) = $s->nginx_t($conf);
        is($rc, 0, 'nginx -t takes it') or diag $out;
    }
};

# A confirm's 6 Stripe calls (its customer's GET, a POST, its retry after
# a lost answer, one after each of three 409s), 250 + 500 + 1000 ms of
# waits, CLAIM's and RECORD's command timeouts (500 ms here): a sweep any
# sooner takes a slow confirm for a dead one's. Warned, not refused (a
# configuration that loaded before still loads). Before 2026-11-28
# nothing was said.
subtest 'a lost_after not longer than a confirm can last is warned of'
    => sub {
    my @warned = (
        ['the default lost_after with a Stripe timeout of 4 minutes',
         extra('linegate_stripe_timeout 4m;'),
         qr/\[warn\] "linegate_reconcile_lost_after" 600000 ms is not longer than a provisioning confirm can last, 1442750 ms \(6 Stripe calls of linegate_stripe_timeout 240000 ms, 1750 ms of waits for 409s, 2 Redis steps of linegate_redis_command_timeout 500 ms\): a reconciliation run may take a slow confirm for a dead worker's and refund its purchase; raise it above 1442750 ms or lower linegate_stripe_timeout/],
        ['a lost_after of 2 minutes with the default Stripe timeout',
         extra('linegate_reconcile_lost_after 2m;'),
         qr/\[warn\] "linegate_reconcile_lost_after" 120000 ms is not longer than a provisioning confirm can last, 182750 ms \(6 Stripe calls of linegate_stripe_timeout 30000 ms/],
        ['a lost_after exactly as long as a confirm can last',
         extra('linegate_reconcile_lost_after 182750ms;'),
         qr/\[warn\] "linegate_reconcile_lost_after" 182750 ms is not longer/],
        ['a lost_after counting the command timeout',
         $s->render(REDIS_COMMAND_TIMEOUT => '10s',
                    HTTP_EXTRA => 'linegate_reconcile_lost_after 200s;'),
         qr/\[warn\] "linegate_reconcile_lost_after" 200000 ms is not longer than a provisioning confirm can last, 201750 ms/],
    );
    for my $c (@warned) {
        my ($what, $conf, $re) = @$c;
        my ($rc, $out) = $s->nginx_t($conf);
        is($rc, 0, "$what: taken") or diag $out;
        like($out, $re, "$what: warned");
    }

    for my $extra ('linegate_reconcile_lost_after 182751ms;',
                   "linegate_stripe_timeout 4m;\n"
                   . 'linegate_reconcile_lost_after 1442751ms;')
    {
        my ($rc, $out) = $s->nginx_t(extra($extra));
        is($rc, 0, "accepted: $extra") or diag $out;
        unlike($out, qr/linegate_reconcile_lost_after/, "no warning: $extra");
    }
};

subtest 'user= with password=' => sub {
    my ($rc, $out) = $s->nginx_t($s->render(REDIS =>
        '127.0.0.1:6379 user=linegate password=x'));
    is($rc, 0, 'accepted') or diag $out;
};

subtest 'an operator token of 16 characters is enough' => sub {
    my ($rc, $out) = $s->nginx_t($s->render(OPERATOR_TOKEN => 'x' x 16));
    is($rc, 0, 'accepted') or diag $out;
};

# capitals and the default port are taken and normalised (t/100 checks
# the token's azp against them)
subtest 'authorized parties: origins with ports and cases accepted' => sub {
    my ($rc, $out) = $s->nginx_t($s->render(CLERK_AZP =>
        'linegate_clerk_authorized_parties https://App.Linegate.test '
        . 'HTTPS://app.linegate.test:443 http://localhost:80 '
        . 'http://localhost:3000 http://[::1]:8080 http://[::1]:80 '
        . 'http://[FE80::1]:65535 https://10.0.0.1;'));
    is($rc, 0, 'accepted') or diag $out;
};

# opened with a blocking fopen, a FIFO hung nginx -t (and a reload, in
# the master) until something wrote to it
subtest 'a Clerk key file that is a FIFO: refused at once' => sub {
    system('mkfifo', "$dir/clerk.fifo") == 0 or BAIL_OUT("mkfifo: $?");
    my ($rc, $out) = $s->nginx_t($s->render(CLERK_KEY => "$dir/clerk.fifo"),
                                 timeout => 10);
    isnt($rc, 0, 'refused');
    isnt($rc, 124, 'at once, not hung');
    like($out, qr/\[emerg\] invalid Clerk key file: \S*clerk\.fifo: not a regular file/,
         'message') or diag $out;
};

subtest 'a PEM Clerk key is accepted' => sub {
    system("openssl pkey -in $dir/keys/clerk.pem -pubout "
           . "-out $dir/clerk.pub 2>/dev/null");
    my ($rc, $out) = $s->nginx_t($s->render(CLERK_KEY => "$dir/clerk.pub"));
    is($rc, 0, 'accepted') or diag $out;
};

# docs/directives.md against the ngx_command_t arrays of src/*.c
my $code = LG::Docs::directives_in_code();
my $doc = LG::Docs::directives_in_docs();

subtest 'every directive is documented, and every documented one exists'
    => sub {
    ok(keys %$code >= 45, scalar(keys %$code) . ' directives in src/*.c');
    my @undoc = grep { !$doc->{$_} } sort keys %$code;
    ok(!@undoc, 'each has an entry in docs/directives.md')
        or diag("not documented: @undoc");
    my @unknown = grep { !$code->{$_} } sort keys %$doc;
    ok(!@unknown, 'each entry is a directive of the module')
        or diag("no such directive: @unknown");
};

subtest 'context and parameters as the code registers them' => sub {
    for my $name (sort grep { $doc->{$_} } keys %$code) {
        my ($c, $d) = ($code->{$name}, $doc->{$name});
        is($d->{context} // '', $c->{context}, "$name: Context");

        my @forms = @{ $d->{syntax} };
        ok(@forms, "$name: has a Syntax") or next;
        my $names = join '|', map { quotemeta } split /,\s*/, $d->{heading};
        my @bad = grep { !/^(?:$names)\s/ } @forms;
        ok(!@bad, "$name: each form starts with the directive")
            or diag("@bad");

        # every form within what nginx accepts, one of them its least
        my $fits = 1;
        my $least;
        for my $form (@forms) {
            my ($min, $max) = LG::Docs::syntax_arity($form);
            $least = $min if !defined $least || $min < $least;
            $fits = 0 if $min < $c->{min}
                         || (defined $c->{max}
                             && (!defined $max || $max > $c->{max}));
        }
        ok($fits && $least == $c->{min},
           "$name: parameters ($c->{min} to "
           . ($c->{max} // 'more') . ')')
            or diag(join "\n", @forms);
        like($forms[0], qr/\bon \| off;$/, "$name: on | off")
            if $c->{flag};
    }
};

# every linegate_* name the docs give is one of the code: a directive, a
# variable or a shared memory zone (an ngx_string of src/*.c), or a
# metric family (with Prometheus's suffixes of a histogram)
subtest 'every linegate_* name of the docs exists' => sub {
    my %known;
    for my $file (glob "$LG::Docs::ROOT/src/*.c") {
        my $src = LG::Docs::_slurp($file);
        $known{$1} = 1 while $src =~ /ngx_string\("(linegate_\w+)"\)/g;
    }
    $known{$_} = 1 for keys %{ LG::Docs::metric_families_in_code() };
    my @unknown;
    for my $file (sort(glob "$LG::Docs::ROOT/docs/*.md"),
                  "$LG::Docs::ROOT/README.md")
    {
        (my $rel = $file) =~ s{^\Q$LG::Docs::ROOT\E/}{};
        my $n = 0;
        for my $line (split /\n/, LG::Docs::_slurp($file)) {
            $n++;
            while ($line =~ /\b(linegate_[a-z_]+)/g) {
                (my $name = $1) =~ s/_(?:bucket|sum|count)$//;
                push @unknown, "$rel:$n: $1" unless $known{$name};
            }
        }
    }
    ok(keys %known > 50, scalar(keys %known) . ' names in the code');
    ok(!@unknown, 'the docs name no other') or diag(join "\n", @unknown);
};

# a documented default as the value the code stores
my %NAMED = (NGX_LOG_ERR => 'error', NGX_HTTP_TOO_MANY_REQUESTS => 429,
             NULL => 'off', NGX_HTTP_LINEGATE_LIMIT_PREACCESS => 'preaccess');
my $defaults = LG::Docs::defaults_in_code();

# directive => sub { (documented parameters) => [[code value, doc value]] }
my %by_handler = (
    ngx_conf_set_msec_slot => sub { [[$_[0], LG::Docs::msec($_[1])]] },
    ngx_conf_set_sec_slot  => sub { [[$_[0], LG::Docs::sec($_[1])]] },
    ngx_conf_set_size_slot => sub { [[$_[0], LG::Docs::size($_[1])]] },
    ngx_conf_set_num_slot  => sub { [[$_[0], $_[1]]] },
    ngx_conf_set_str_slot  => sub { [[$_[0], $_[1]]] },
    ngx_conf_set_flag_slot => sub { [[$_[0] ? 'on' : 'off', $_[1]]] },
    ngx_conf_set_enum_slot => sub { [[$NAMED{ $_[0] } // $_[0], $_[1]]] },
    # conf.c's, as nginx's but for its refusal
    ngx_http_linegate_conf_set_enum_slot
        => sub { [[$NAMED{ $_[0] } // $_[0], $_[1]]] },
);
my %by_fields = (
    linegate_api_key_cache => [['apikey_cache_ttl', \&LG::Docs::msec]],
    linegate_api_key_cache_size => [['apikey_cache_size']],
    linegate_provision_limits => [['prov_daily'], ['prov_monthly']],
    linegate_line_daily_limits => [['line_daily_conversations'],
                                   ['line_daily_messages']],
    linegate_workspace_rate => [['ws_rate', sub { $_[0] =~ /^(\d+)r/ && $1 }],
                                ['ws_rate_window',
                                 sub { $_[0] =~ m{r/(.)$}
                                       && {s => 1, m => 60}->{$1} }, 0]],
    linegate_limit_status => [['status']],
    linegate_reconcile_auto => [['reconcile_auto']],
    linegate_lines_cache => [['lines_cache',
                              sub { $_[0] eq 'off' ? 0
                                    : LG::Docs::size($_[0]) }]],
    linegate_redis_wait => [['redis_wait_replicas',
                             sub { $_[0] =~ /^none\b/ ? 0 : undef }]],
    linegate_reconcile_lost_after => [['reconcile_lost', \&LG::Docs::msec]],
);

subtest 'documented defaults are the code\'s' => sub {
    my $checked = 0;
    for my $name (sort grep { $doc->{$_} } keys %$code) {
        my ($c, $d) = ($code->{$name}, $doc->{$name});
        my $text = $d->{default};
        my $field = $c->{field};
        my $has = defined $field && exists $defaults->{$field};

        if (!defined $text) {
            # a string nobody set is empty: the directive is required
            # where it is used, or optional, and has no default to show
            ok(!$has || $c->{handler} eq 'ngx_conf_set_str_slot'
               && $defaults->{$field} eq '',
               "$name: no default documented, none in the code")
                or diag("the code's: $defaults->{$field}");
            next;
        }

        (my $value = $text) =~ s/^\Q$name\E\s+//;
        $value =~ s/;$//;
        my @pairs;
        if (my $fields = $by_fields{$name}) {
            my @v = $value =~ /^none\b/ ? ($value) : split ' ', $value;
            for my $i (0 .. $#$fields) {
                # the field, how to read it, which parameter holds it
                my ($f, $conv, $at) = @{ $fields->[$i] };
                my $want = $defaults->{$f};
                $want = $NAMED{$want} // $want if defined $want;
                my $got = $v[$at // $i];
                $got = $conv->($got // '') if $conv;
                push @pairs, [$want, $got];
            }
        }
        elsif ($has && $by_handler{ $c->{handler} }) {
            @pairs = @{ $by_handler{ $c->{handler} }->($defaults->{$field},
                                                      $value) };
        }
        elsif ($name eq 'linegate_limit_on_error') {
            # merge_loc_conf: "unset ? NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_X"
            my ($x) = LG::Docs::_slurp("$LG::Docs::ROOT/$c->{file}")
                      =~ /on_error\s*==\s*NGX_CONF_UNSET_UINT\)\s*
                          \?\s*NGX_HTTP_LINEGATE_LIMIT_ON_ERROR_(\w+)/x;
            @pairs = ([lc($x // ''), $value]);
        }
        else {
            fail("$name: default \"$value\" is not checked");
            next;
        }
        $checked++;
        is_deeply([map { $_->[1] } @pairs], [map { $_->[0] } @pairs],
                  "$name: default $value");
    }
    ok($checked >= 25, "$checked defaults compared");
};

# nginx -t on every ```nginx example of the docs. A fragment is what the
# docs show of a configuration, and is made whole so, and no other way:
# - a line "..." (a part left out) is dropped;
# - the module is the one under test, loaded when the example does not;
# - a fragment's location blocks go into a server, the rest into http;
#   a fragment with an http block is a whole configuration (events added);
# - "backend" and "api.stripe.com" are upstream blocks on 127.0.0.1, so
#   that nothing is resolved (nginx resolves proxy_pass hosts at load);
# - a secret shown as "2f7c..." is 32 characters; a path of /etc or /var
#   is a file of the test (a secret, or a certificate and key for .pem);
# - an example that uses linegate_limit or linegate_api without
#   linegate_redis gets one (a page's recipes share the page's first
#   example's Redis), and a limit zone it uses without defining it is
#   the one an example before it on the same page defined;
# - njs (js_import, js_set $v) is not installed here: $v is a map.
system("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=linegate "
       . "-days 2 -keyout $dir/example-key.pem -out $dir/example-cert.pem "
       . "2>/dev/null") == 0
    or BAIL_OUT('openssl could not make a certificate');

my $module = $ENV{LG_MODULE} // "$LG::Stack::ROOT/build/"
                                 . 'ngx_http_linegate_module.so';

sub example_file {
    my ($path) = @_;
    return "$dir/example-key.pem" if $path =~ /key[^\/]*\.pem$/;
    return "$dir/example-cert.pem" if $path =~ /\.pem$/;
    (my $name = $path) =~ s{[^\w.-]}{_}g;
    write_file("example$name", "0123456789abcdef0123456789abcdef\n")
        unless -e "$dir/example$name";
    return "$dir/example$name";
}

sub example_conf {
    my ($text, $zones) = @_;

    $text =~ s/^\s*\.\.\.\s*\n//mg;
    $text =~ s{\S*modules/ngx_http_linegate_module\.so}{$module}g;
    $text =~ s/\b(\w+)\.\.\.(?=;)/$1 . ('0' x 32)/ge;
    $text =~ s{(?<=\s)(/(?:etc|var)/[^\s;]+)}{example_file($1)}ge;
    $text =~ s/^\s*js_import\b.*\n//mg;
    $text =~ s/^\s*js_set\s+(\$\w+)\b.*\n/map \$host $1 { default ""; }\n/mg;

    my $need = '';
    $need .= "linegate_redis 127.0.0.1:6379;\n"
        if $text =~ /\blinegate_(?:limit|api)\s/m
           && $text !~ /^\s*linegate_redis\s/m;
    my %defined = map { $_ => 1 } $text =~ /linegate_limit_zone\s+(\S+)/g;
    for my $z ($text =~ /linegate_limit\s+zone=([\w-]+)/g) {
        $need .= "$zones->{$z}\n" if !$defined{$z}++ && $zones->{$z};
    }
    $need .= "upstream backend { server 127.0.0.1:1; }\n"
        if $text =~ m{http://backend\b};
    $need .= "upstream api.stripe.com { server 127.0.0.1:1; }\n"
        if $text =~ m{https://api\.stripe\.com\b};

    my $conf;
    if ($text =~ /^\s*http\s*\{/m || $text !~ /\S/
        || $text =~ /^\s*load_module\b/m && $text !~ /\{/)
    {
        $conf = $text;
        $conf =~ s/^(\s*http\s*\{\n)/$1$need/m;
    }
    else {
        my @st = LG::Docs::top_statements($text);
        $conf = "http {\n$need" . join('', grep { !/^\s*location\b/ } @st)
                . "server {\nlisten 127.0.0.1:1;\n"
                . join('', grep { /^\s*location\b/ } @st) . "}\n}\n";
    }
    $conf = "load_module $module;\n$conf" if $conf !~ /^\s*load_module/m;
    $conf .= "events {}\n" if $conf !~ /^\s*events\s*\{/m;
    return $conf;
}

subtest 'nginx -t accepts every nginx example of the docs' => sub {
    my @ex = LG::Docs::nginx_examples();
    ok(@ex >= 15, scalar(@ex) . ' examples');
    my %zones;
    for my $ex (@ex) {
        my $page = $zones{ $ex->{file} } //= {};
        my $conf = example_conf($ex->{text}, $page);
        $page->{$1} = $&
            while $ex->{text} =~ /linegate_limit_zone\s+(\S+)[^;]*;/g;
        my ($rc, $out) = $s->nginx_t($conf);
        is($rc, 0, "$ex->{where}: nginx -t")
            or diag("$out\n$conf");
    }
};

# bench/*.conf.in rendered as bench/run.sh renders them: make bench
# starts with nginx -t of each, and a check added on 2026-11-28
# (proxy_ignore_client_abort in the Stripe location) refused them, so
# make bench failed at its start while every test passed
subtest 'the bench configurations pass nginx -t' => sub {
    my %v = (MODULE => $s->{module}, PREFIX => $s->{prefix}, WORKERS => 1,
             PORT => 18999, CANNED_PORT => 18998, REDIS => '127.0.0.1:1',
             SEEDS => '127.0.0.1:1 127.0.0.1:2', STUB => '127.0.0.1:1',
             CLERK_KEY => $s->jwks_path,
             CLERK_ISSUER => 'https://clerk.bench.test');
    for my $tpl (qw(linegate.conf.in linegate-cluster.conf.in)) {
        open my $fh, '<', "$LG::Stack::ROOT/bench/$tpl" or die "$tpl: $!";
        my $conf = do { local $/; <$fh> };
        $conf =~ s/\@([A-Z_]+)\@/$v{$1} \/\/ "\@$1\@"/ge;
        unlike($conf, qr/^[^#]*\@[A-Z_]+\@/m, "$tpl: every value filled");
        my ($rc, $out) = $s->nginx_t($conf);
        is($rc, 0, "$tpl: accepted") or diag $out;
    }
};

done_testing;
