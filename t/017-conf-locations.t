# linegate_api and nginx's blocks inside a location: "limit_except" and
# "if" serve the location's API (nginx takes the content handler from
# limit_except's configuration: before, a method it named reached the
# static module, 404), a nested location does not (before, it inherited
# the API without its handler, and answered nginx's pages in JSON).
# A reload with a configuration nginx -t refuses leaves the workers
# serving the old one.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(sleep);
use LG::Stack;
use LG::Test;

my $extra = <<'EOF';
location /lx/ {
    linegate_api operator;
    limit_except GET { allow 127.0.0.1; deny all; }
}
location /if/ {
    linegate_api operator;
    if ($http_x_never = "yes") { return 418; }
}
location /nest/ {
    linegate_api operator;
    location /nest/inner/ { return 404; }
}
location /ly {
    linegate_api operator;
}
EOF

my $s = LG::Stack->new(stub => 0, SERVER_EXTRA => $extra)->start;
my $auth = {Authorization => 'Bearer ' . $s->operator_token};

sub call {
    my ($method, $path, $body) = @_;
    my $tx = $s->ua->build_tx($method => $s->url($path) => $auth
                              => defined $body ? (json => $body) : ());
    return $s->ua->start($tx);
}

# the access log line is written once the answer is sent: wait for it
sub logged {
    my ($re) = @_;
    for (1 .. 100) {
        return 1 if $s->access_log =~ $re;
        sleep 0.02;
    }
    return 0;
}

subtest 'limit_except: every method reaches the API' => sub {
    answer_is(call(GET => '/lx/inventory'), 200, 'GET (not limited)');
    # POST goes through limit_except's configuration (allowed there)
    my $tx = call(POST => '/lx/inventory', {numbers => ['+15555550100']});
    isnt($tx->res->code, 404, 'POST: not nginx\'s 404');
    ok(logged(qr{"POST /lx/inventory [^\n]* auth=operator }),
       'POST: the operator API authenticated it');
    unlike($s->access_log, qr{"POST /lx/inventory [^\n]*outcome=nginx_error},
           'POST: not an nginx error page');
    $tx = call(DELETE => '/lx/inventory/+15555550100');
    ok(logged(qr{"DELETE /lx/inventory\S* [^\n]* auth=operator }),
       'DELETE: the operator API');
};

subtest 'if: the API is served' => sub {
    answer_is(call(GET => '/if/inventory'), 200, 'GET');
};

subtest 'a nested location does not serve the API' => sub {
    my $tx = $s->ua->get($s->url('/nest/inner/x'));
    is($tx->res->code, 404, 'status 404');
    like($tx->res->headers->content_type // '', qr{^text/html},
         'nginx\'s HTML page, as any location without linegate_api');
    is($tx->res->headers->header('X-Request-Id'), undef,
       'no X-Request-Id');
    answer_is(call(GET => '/nest/inventory'), 200, 'its parent serves it');
};

# Routes are matched on the URI after the location's name. A prefix
# without its trailing '/' left a '/' in front of every route (each call
# a 404 "Not found"), and served "/lyinventory" as "/ly/inventory"; a
# regex or exact location has no prefix to strip: nginx -t refuses it
subtest 'a prefix location without its trailing /' => sub {
    answer_is(call(GET => '/ly/inventory'), 200, 'GET /ly/inventory');
    json_error_is(call(GET => '/ly/workspaces/org_nobody'), 404,
                  'NOT_FOUND', 'a route of /ly/', qr/Workspace not found/);
    my $body = answer_is(call(GET => '/lyinventory'), 404,
                         'the prefix without its /: no route');
    is_deeply($body, {error => 'Not found'}, '404: no route');
    answer_is(call(GET => '/ly'), 404, 'the prefix alone');

    my $good = LG::Stack::_slurp($s->prefix . '/nginx.conf');
    for my $loc ('~ ^/lre/', '= /lexact/inventory') {
        my $bad = $good =~ s{(location /ly \{)}{location $loc {
            linegate_api operator;
        }
        $1}r;
        isnt($bad, $good, "a location $loc");
        my ($rc, $out) = $s->nginx_t($bad);
        isnt($rc, 0, "nginx -t refuses the operator API in location $loc");
        like($out, qr/prefix location/, 'and says why');
    }
};

subtest 'a reload refused by nginx -t keeps the old workers' => sub {
    my $conf = $s->prefix . '/nginx.conf';
    my $good = LG::Stack::_slurp($conf);
    my $bad = $good =~ s/(linegate_max_body) 64k;/$1 0;/r;
    isnt($bad, $good, 'a bad configuration');
    my ($rc, $out) = $s->nginx_t($bad);
    isnt($rc, 0, 'nginx -t refuses it');

    my $from = length $s->error_log;
    open my $fh, '>', $conf or die "$conf: $!";
    print $fh $bad;
    close $fh;
    kill 'HUP', $s->{pids}{nginx};

    my $log = '';
    for (1 .. 100) {
        $log = substr($s->error_log, $from);
        last if $log =~ /linegate_max_body/;
        sleep 0.05;
    }
    like($log, qr/\[emerg\] .*"linegate_max_body" must be between 1 and 1m/,
         'the master logs why');
    unlike($log, qr/start worker process/, 'no new worker');
    answer_is(call(GET => '/lx/inventory'), 200, 'the old workers serve');

    open $fh, '>', $conf or die "$conf: $!";
    print $fh $good;
    close $fh;
};

done_testing;
