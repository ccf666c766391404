# The module loads, the stack answers, and nginx -t refuses a bad
# configuration with a message that names the problem.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
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
    ['Redis address that is not one',
     $s->render(REDIS => 'not-an-address'),
     qr/\[emerg\] invalid Redis address "not-an-address"/],
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
     qr/\[emerg\] "linegate_inventory_cache" must be at most 60000ms/],
    ['a preview token that expires at once',
     $s->render(HTTP_EXTRA => 'linegate_preview_ttl 0;'),
     qr/\[emerg\] value must be between 1 and 86400 in /],
    ['an idempotency key forgotten while its creation may still run',
     $s->render(HTTP_EXTRA => 'linegate_idempotency_ttl 0;'),
     qr/\[emerg\] value must be between 60 and 2592000 in /],
    ['an idempotency key kept for more than 30 days',
     $s->render(HTTP_EXTRA => 'linegate_idempotency_ttl 31d;'),
     qr/\[emerg\] value must be between 60 and 2592000 in /],
    ['a Clerk leeway of more than a minute',
     $s->render(HTTP_EXTRA => 'linegate_clerk_leeway 5m;'),
     qr/\[emerg\] value must be between 0 and 60 in /],
    ['an API key cache of one entry',
     $s->render(HTTP_EXTRA => 'linegate_api_key_cache_size 1;'),
     qr/\[emerg\] "linegate_api_key_cache_size" must be between 2 and/],
    ['an API key cache size that is not a number',
     $s->render(HTTP_EXTRA => 'linegate_api_key_cache_size many;'),
     qr/\[emerg\] "linegate_api_key_cache_size" directive invalid number/],
);

for my $case (@refused) {
    my ($name, $conf, $re) = @$case;
    my ($rc, $out) = $s->nginx_t($conf);
    isnt($rc, 0, "refused: $name");
    like($out, $re, "refused: $name: message") or diag $out;
}

subtest 'an operator token of 16 characters is enough' => sub {
    my ($rc, $out) = $s->nginx_t($s->render(OPERATOR_TOKEN => 'x' x 16));
    is($rc, 0, 'accepted') or diag $out;
};

subtest 'a PEM Clerk key is accepted' => sub {
    system("openssl pkey -in $dir/keys/clerk.pem -pubout "
           . "-out $dir/clerk.pub 2>/dev/null");
    my ($rc, $out) = $s->nginx_t($s->render(CLERK_KEY => "$dir/clerk.pub"));
    is($rc, 0, 'accepted') or diag $out;
};

done_testing;
