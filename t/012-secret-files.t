# Secrets stay out of the configuration (and of nginx -T): the operator
# token, the Stripe webhook secret, the Redis password, the Sentinel
# password and the Stripe API key (linegate_stripe_key_file, at the end)
# each have a "..._file <path>" directive, read when the
# configuration is loaded (one trailing newline dropped). nginx -t fails
# naming the path of a file that cannot be read, is empty, or holds more
# than one line.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(hmac_sha256_hex);
use File::Temp qw(tempdir);
use Mojo::JSON qw(encode_json);
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;

my $dir = tempdir('linegate-secrets-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$name: $!";
    print $fh $text;
    close $fh;
    chmod 0600, "$dir/$name";
    return "$dir/$name";
}

my $token = LG::Stack::random_token(40);
my $whsec = 'whsec_' . LG::Stack::random_token(32);
my $redis_pw = LG::Stack::random_token(24);

my $token_file = write_file('operator', "$token\n");
my $whsec_file = write_file('webhook', "$whsec\r\n");
my $pw_file = write_file('redis', $redis_pw);

# the template's inline directives replaced by their _file forms
sub with_files {
    my ($s, %f) = @_;
    my $conf = $s->render;
    $conf =~ s{^\s*linegate_operator_token\s[^;]*;}
              {    linegate_operator_token_file $f{token};}m or die;
    $conf =~ s{^\s*linegate_webhook_secret\s[^;]*;}
              {    linegate_webhook_secret_file $f{whsec};}m or die;
    $conf =~ s{^(\s*linegate_redis\s[^;]*;)}
              {$1\n    linegate_redis_password_file $f{pw};}m or die;
    return $conf;
}

my $s = LG::Stack->new(stub => 0, OPERATOR_TOKEN => 'unused-' . 'x' x 20,
                       WEBHOOK_SECRET => 'whsec_unused')->start;

my %files = (token => $token_file, whsec => $whsec_file, pw => $pw_file);

# the stack's nginx, restarted on the configuration with _file directives;
# Redis asks for the password first
$s->redis->config_set(requirepass => $redis_pw);
$s->redis->auth($redis_pw);
{
    open my $fh, '>', $s->prefix . '/nginx.conf' or die $!;
    print $fh with_files($s, %files);
    close $fh;
}
my $from = length $s->error_log;
kill 'HUP', $s->{pids}{nginx};
ok($s->wait_redis_connected($from, 10),
   'the workers authenticate to Redis with the password of the file');

subtest 'nginx -t and nginx -T: the secrets are not in the configuration' => sub {
    my $p = $s->prefix;
    my $out = qx{$s->{nginx} -T -p '$p/' -c '$p/nginx.conf' -e '$p/error.log' 2>&1};
    is($? >> 8, 0, 'nginx -T: exit 0') or diag $out;
    like($out, qr/linegate_operator_token_file \Q$token_file\E;/,
         'the file is named');
    unlike($out, qr/\Q$token\E/, 'not the operator token');
    unlike($out, qr/\Q$whsec\E/, 'not the webhook secret');
    unlike($out, qr/\Q$redis_pw\E/, 'not the Redis password');
};

subtest 'the operator token of the file (trailing newline dropped)' => sub {
    # a reload is done once a new worker answers with the new token
    my $tx;
    for (1 .. 200) {
        $tx = $s->ua->get($s->url('/_linegate/inventory')
                          => {Authorization => "Bearer $token"});
        last if $tx->res->code == 200;
        sleep 0.05;
    }
    answer_is($tx, 200, 'the token of the file');
    $tx = $s->ua->get($s->url('/_linegate/inventory')
                      => {Authorization => "Bearer ${token}x"});
    is($tx->res->code, 401, 'another token: 401');
    $tx = $s->ua->get($s->url('/_linegate/inventory')
                      => {Authorization => 'Bearer unused-' . 'x' x 20});
    is($tx->res->code, 401, 'the inline token of before: 401');
};

subtest 'the webhook secret of the file (CRLF dropped)' => sub {
    my $body = encode_json({id => 'evt_file', object => 'event',
        type => 'charge.succeeded', api_version => '2025-03-31.basil',
        created => time, livemode => \0,
        data => {object => {id => 'ch_1'}}});
    my $t = time;
    for my $case ([$whsec, 200], ["$whsec\r", 400], ['whsec_unused', 400]) {
        my ($key, $status) = @$case;
        my $sig = hmac_sha256_hex("$t.$body", $key);
        my $tx = $s->ua->post($s->url('/webhooks/stripe') => {
            'Content-Type' => 'application/json',
            'Stripe-Signature' => "t=$t,v1=$sig"} => $body);
        is($tx->res->code, $status,
           ($status == 200 ? 'signed with it' : 'signed otherwise')
           . ": $status");
    }
};

my $conf_ok = with_files($s, %files);

my @refused = (
    ['a token file that does not exist',
     with_files($s, %files, token => "$dir/missing"),
     qr/\[emerg\] "linegate_operator_token_file": cannot open "\Q$dir\E\/missing" \(2: No such file/],
    ['an empty token file',
     with_files($s, %files, token => write_file('empty', '')),
     qr/\[emerg\] "linegate_operator_token_file": "\Q$dir\E\/empty" is empty/],
    ['a token file of one newline',
     with_files($s, %files, token => write_file('nl', "\n")),
     qr/\[emerg\] "linegate_operator_token_file": "\Q$dir\E\/nl" is empty/],
    ['a token file of two lines',
     with_files($s, %files, token => write_file('two', "a" x 20 . "\nb\n")),
     qr/\[emerg\] "linegate_operator_token_file": "\Q$dir\E\/two" has a control character/],
    ['a token file that is a directory',
     with_files($s, %files, token => $dir),
     qr/\[emerg\] "linegate_operator_token_file": "\Q$dir\E" is not a file/],
    ['a short token in a file',
     with_files($s, %files, token => write_file('short', "x" x 15 . "\n")),
     qr/\[emerg\] "linegate_operator_token" must be at least 16 characters/],
    # one line of a file is kept whole: spaces around it were the token's
    ['a token file with a space after the token',
     with_files($s, %files, token => write_file('sp', "x" x 20 . " \n")),
     qr/\[emerg\] "linegate_operator_token" must not begin or end with a space/],
    ['a webhook secret file that does not exist',
     with_files($s, %files, whsec => "$dir/nowhsec"),
     qr/\[emerg\] "linegate_webhook_secret_file": cannot open "\Q$dir\E\/nowhsec"/],
    ['an empty webhook secret file',
     with_files($s, %files, whsec => "$dir/empty"),
     qr/\[emerg\] "linegate_webhook_secret_file": "\Q$dir\E\/empty" is empty/],
    ['a Redis password file that does not exist',
     with_files($s, %files, pw => "$dir/nopw"),
     qr/\[emerg\] "linegate_redis_password_file": cannot open "\Q$dir\E\/nopw"/],
    ['an empty Redis password file',
     with_files($s, %files, pw => "$dir/empty"),
     qr/\[emerg\] "linegate_redis_password_file": "\Q$dir\E\/empty" is empty/],
    ['a token inline and in a file',
     $conf_ok =~ s{(linegate_operator_token_file[^;]*;)}
                  {$1\n    linegate_operator_token ${\ ('y' x 20)};}r,
     qr/\[emerg\] "linegate_operator_token" directive is duplicate/],
    ['a token in a file and inline',
     $conf_ok =~ s{(linegate_operator_token_file[^;]*;)}
                  {    linegate_operator_token ${\ ('y' x 20)};\n$1}r,
     qr/\[emerg\] "linegate_operator_token_file": the secret is already set/],
    ['a Redis password inline and in a file',
     $conf_ok =~ s{(linegate_redis [^;\s]+)}{$1 password=inline}r,
     qr/\[emerg\] "linegate_redis_password_file": the secret is already set/],
    ['a Redis password in a file and inline',
     ($conf_ok =~ s{(linegate_redis [^;\s]+)}{$1 password=inline}r)
         =~ s{^(\s*linegate_redis [^\n]*\n)(\s*linegate_redis_password_file[^\n]*\n)}
             {$2$1}mr,
     qr/\[emerg\] the Redis password is set twice/],
);

# A FIFO is no regular file: opening it used to wait for a writer, and
# nginx -t (and a reload, in the master) hung there for good.
system('mkfifo', "$dir/fifo") == 0 or BAIL_OUT("mkfifo: $?");
push @refused,
    ['a token file that is a FIFO',
     with_files($s, %files, token => "$dir/fifo"),
     qr/\[emerg\] "linegate_operator_token_file": "\Q$dir\E\/fifo" is not a file/],
    ['a Redis password file that is a FIFO',
     with_files($s, %files, pw => "$dir/fifo"),
     qr/\[emerg\] "linegate_redis_password_file": "\Q$dir\E\/fifo" is not a file/];

for my $case (@refused) {
    my ($name, $conf, $re) = @$case;
    my ($rc, $out) = $s->nginx_t($conf, timeout => 10);
    isnt($rc, 0, "refused: $name");
    isnt($rc, 124, "refused: $name: at once, not hung");
    like($out, $re, "refused: $name: message") or diag $out;
}

subtest 'accepted: the _file directives, and a file without a newline' => sub {
    my ($rc, $out) = $s->nginx_t($conf_ok);
    is($rc, 0, 'exit 0') or diag $out;
    unlike($out, qr/\[warn\]/, 'files of mode 0600: no warning');
};

# an ACL user with the password in a file (user= alone is refused, t/010)
subtest 'accepted: user= with linegate_redis_password_file' => sub {
    my ($rc, $out) = $s->nginx_t(
        $conf_ok =~ s{^(\s*linegate_redis [^;]*);}{$1 user=linegate;}mr);
    is($rc, 0, 'exit 0') or diag $out;
};

subtest 'a secret file every user can read: a warning' => sub {
    my $open = write_file('open-token', "$token\n");
    chmod 0644, $open;
    my ($rc, $out) = $s->nginx_t(with_files($s, %files, token => $open));
    is($rc, 0, 'accepted') or diag $out;
    like($out, qr/\[warn\] "linegate_operator_token_file": "\Q$open\E" is readable by every user \(mode 0644\)/,
         'nginx -t warns, naming the path and the mode');
    unlike($out, qr/\Q$token\E/, 'not the secret');
};

# The Sentinel password (sentinel.conf's requirepass) has its _file form
# too: linegate_redis_sentinel_password_file, either it or
# sentinel_password=. nginx -t reads the configuration without connecting.
my $sentinel_pw = LG::Stack::random_token(24);
my $sentinel_pw_file = write_file('sentinel', "$sentinel_pw\n");
my $conf_sentinel = $conf_ok
    =~ s{^(\s*linegate_redis )[^;]*;}
        {${1}127.0.0.1:26379 127.0.0.1:26380 sentinel=lgmaster;
    linegate_redis_sentinel_password_file $sentinel_pw_file;}mr;

# nginx -T on a configuration text, in a directory of its own
sub nginx_T {
    my ($conf) = @_;
    my $d = tempdir('nginx-T-XXXXXX', DIR => $s->dir, CLEANUP => 1);
    my $p = $s->prefix;
    $conf =~ s/\Q$p\E/$d/g;
    open my $fh, '>', "$d/nginx.conf" or die "$d/nginx.conf: $!";
    print $fh $conf;
    close $fh;
    my $out = qx{$s->{nginx} -T -p '$d/' -c '$d/nginx.conf' -e '$d/error.log' 2>&1};
    return ($? >> 8, $out);
}

my $no_sentinels = qr/\[emerg\] "linegate_redis_sentinel_password_file" needs "linegate_redis \.\.\. sentinel=<master name>"/;

subtest 'the Sentinel password in a file' => sub {
    my ($rc, $out) = $s->nginx_t($conf_sentinel);
    is($rc, 0, 'nginx -t: exit 0') or diag $out;

    ($rc, $out) = nginx_T($conf_sentinel);
    is($rc, 0, 'nginx -T: exit 0') or diag $out;
    like($out, qr/linegate_redis_sentinel_password_file \Q$sentinel_pw_file\E;/,
         'the file is named');
    unlike($out, qr/\Q$sentinel_pw\E/, 'not the Sentinel password');

    my @refused = (
        ['inline and in a file',
         $conf_sentinel =~ s{(sentinel=lgmaster)}
                            {$1 sentinel_password=inline}r,
         qr/\[emerg\] "linegate_redis_sentinel_password_file": the secret is already set/],
        ['in a file and inline',
         ($conf_sentinel =~ s{(sentinel=lgmaster)}
                             {$1 sentinel_password=inline}r)
             =~ s{^(\s*linegate_redis [^\n]*\n)(\s*linegate_redis_sentinel_password_file[^\n]*\n)}
                 {$2$1}mr,
         qr/\[emerg\] the Sentinel password is set twice/],
        ['a file that does not exist',
         $conf_sentinel =~ s{\Q$sentinel_pw_file\E}{$dir/nosentinel}r,
         qr/\[emerg\] "linegate_redis_sentinel_password_file": cannot open "\Q$dir\E\/nosentinel"/],
        ['an empty file',
         $conf_sentinel =~ s{\Q$sentinel_pw_file\E}{$dir/empty}r,
         qr/\[emerg\] "linegate_redis_sentinel_password_file": "\Q$dir\E\/empty" is empty/],
        # without sentinel= nothing reads it (before: accepted, ignored)
        ['the file without sentinel=',
         $conf_ok =~ s{^(\s*linegate_redis\s[^;]*;)}
                      {$1\n    linegate_redis_sentinel_password_file $sentinel_pw_file;}mr,
         $no_sentinels],
        ['the file before linegate_redis, without sentinel=',
         $conf_ok =~ s{^(\s*linegate_redis\s[^;]*;)}
                      {    linegate_redis_sentinel_password_file $sentinel_pw_file;\n$1}mr,
         $no_sentinels],
        ['the file with cluster=on',
         ($conf_ok =~ s{(linegate_redis [^;\s]+)}{$1 cluster=on}r)
             =~ s{^(\s*linegate_redis\s[^;]*;)}
                 {$1\n    linegate_redis_sentinel_password_file $sentinel_pw_file;}mr,
         $no_sentinels],
        ['inline without sentinel=',
         $conf_ok =~ s{(linegate_redis [^;\s]+)}{$1 sentinel_password=inline}r,
         qr/\[emerg\] "linegate_redis" directive takes "sentinel_password=" only with "sentinel=<master name>"/],
    );

    for my $case (@refused) {
        my ($name, $conf, $re) = @$case;
        ($rc, $out) = $s->nginx_t($conf);
        isnt($rc, 0, "refused: $name");
        like($out, $re, "refused: $name: message") or diag $out;
    }
};

# The Stripe secret key, the one secret that moves money, in a file too:
# linegate_stripe_key_file puts "Authorization: Bearer <key>" on every
# Stripe call, so that the Stripe location needs no proxy_set_header
# holding it (which nginx -T printed, whatever file it was included
# from). Before: the directive did not exist, and the key could only be
# in the configuration.
subtest 'the Stripe secret key in a file' => sub {
    require LG::Lines;
    my $key = 'sk_test_' . LG::Stack::random_token(32);
    my $key_file = write_file('stripe-key', "$key\n");

    # the inline key of the template is refused by the stub: a call
    # succeeds only with the key of the file
    my $st = LG::Stack->new(STRIPE_KEY => 'rk_refused')->start;
    my $l = LG::Lines->new($st);
    my $w = $l->workspace('org_keyfile');
    # an email line is an add-on: its creation calls Stripe
    my $email = LG::Lines::body(channelType => 'email',
                                email => 'key@example.com');
    my $tx = $l->create($w, $email);
    is($tx->res->code, 502, 'the inline key refused by Stripe: 502')
        or diag $tx->res->body;

    my $conf = $st->render;
    $conf =~ s{^\s*proxy_set_header Authorization [^;]*;\n}{}m or die;
    $conf =~ s{^(\s*linegate_stripe_location [^;]*;)}
              {$1\n    linegate_stripe_key_file $key_file;}m or die;

    my ($rc, $out) = $st->nginx_t($conf);
    is($rc, 0, 'nginx -t: exit 0') or diag $out;

    open my $fh, '>', $st->prefix . '/nginx.conf' or die $!;
    print $fh $conf;
    close $fh;
    # the old workers gone: until they have seen the reload, they still
    # accept connections, and call Stripe with the inline key
    my @old = split ' ', `pgrep -P $st->{pids}{nginx}`;
    my $from = length $st->error_log;
    kill 'HUP', $st->{pids}{nginx};
    ok($st->wait_redis_connected($from, 10), 'reloaded');
    delete $st->{ua};    # its keepalive connection is an old worker's
    my $until = time + 10;
    sleep 0.05 while grep({ kill 0, $_ } @old) && time < $until;
    ok(!grep({ kill 0, $_ } @old), 'the old workers exited');

    $tx = $l->create($w, $email);
    is($tx->res->code, 201, 'a creation with the key of the file: 201')
        or diag $tx->res->body;
    ok(scalar $l->invoices($w->{customer}), 'its invoice made at Stripe');

    my $p = $st->prefix;
    my $dump = qx{$st->{nginx} -T -p '$p/' -c '$p/nginx.conf' -e '$p/error.log' 2>&1};
    is($? >> 8, 0, 'nginx -T: exit 0') or diag $dump;
    like($dump, qr/linegate_stripe_key_file \Q$key_file\E;/, 'the file is named');
    unlike($dump, qr/\Q$key\E/, 'nginx -T: not the Stripe key');
    unlike($st->error_log . $st->access_log, qr/\Q$key\E/,
           'the key is not in the logs');

    my @bad = (
        ['a key with a space', write_file('stripe-sp', "sk_test_a b\n"),
         qr/\[emerg\] "linegate_stripe_key_file": the key holds a space or a character that is not printable ASCII/],
        ['an empty key file', write_file('stripe-empty', "\n"),
         qr/\[emerg\] "linegate_stripe_key_file": "\Q$dir\E\/stripe-empty" is empty/],
        ['a key file of two lines', write_file('stripe-two', "$key\nx\n"),
         qr/\[emerg\] "linegate_stripe_key_file": "\Q$dir\E\/stripe-two" has a control character/],
    );
    for my $case (@bad) {
        my ($name, $file, $re) = @$case;
        ($rc, $out) = $st->nginx_t($conf =~ s{\Q$key_file\E}{$file}r);
        isnt($rc, 0, "refused: $name");
        like($out, $re, "refused: $name: message") or diag $out;
        unlike($out, qr/\Q$key\E|sk_test_a b/, "refused: $name: no key printed");
    }
};

# the Redis password stays out of the logs
unlike($s->error_log, qr/\Q$redis_pw\E|\Q$token\E|\Q$whsec\E/,
       'no secret in the error log');

done_testing;
