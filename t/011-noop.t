# Loading the module changes nothing where it is not used: one nginx
# configuration of plain locations (return, a static file, proxy_pass to a
# backend this test starts, variables echoed in headers and in the access
# log) served by nginx without the module and by nginx with the module
# loaded and serving an API on another server. Answers, headers (Date
# aside) and log lines are the same; $request_id has the same shape and
# comes from nginx's generator (no two ids share a half). With
# linegate_fast_request_id on, ids keep that shape and stay unpredictable,
# with the metrics API alone too.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use IO::Socket::INET;
use Math::BigInt;
use Mojo::JSON qw(encode_json decode_json);
use Mojo::Server::Daemon;
use Mojo::UserAgent;
use Mojolicious::Lite;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use LG::Stack;

my $NGINX = $ENV{LG_NGINX} // '/usr/sbin/nginx';
my $MODULE = $ENV{LG_MODULE}
             // "$LG::Stack::ROOT/build/ngx_http_linegate_module.so";

my $dir = tempdir('linegate-noop-XXXXXX', TMPDIR => 1,
                   CLEANUP => !$ENV{LG_KEEP});
chmod 0755, $dir;
make_path("$dir/html/static");
open my $fh, '>', "$dir/html/static/a.txt" or die $!;
print $fh "a static file\n";
close $fh;
chmod 0755, "$dir/html", "$dir/html/static";
chmod 0644, "$dir/html/static/a.txt";

my %pids;

# its waitpid would leave $? at -1, the file's exit status (LG::Stack's
# END block, which once reset it to 0, now keeps it)
END {
    local $?;
    for my $pid (values %pids) {
        kill 'TERM', $pid;
        for (1 .. 300) { last if waitpid($pid, WNOHANG) != 0; sleep 0.01 }
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
}

sub spawn {
    my ($name, $code) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$dir/$name.out";
        open STDERR, '>&', \*STDOUT;
        $code->();
        POSIX::_exit(127);
    }
    $pids{$name} = $pid;
}

sub wait_port {
    my ($port) = @_;
    for (1 .. 500) {
        return 1 if IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $port);
        sleep 0.01;
    }
    die "nothing answers on port $port\n";
}

my ($backend, $redis, @ports) = LG::Stack::_free_ports(16);

# the backend: echoes what nginx sent it
app->log->level('fatal');
any '/*any' => {any => ''} => sub {
    my $c = shift;
    my $h = $c->req->headers;
    $c->res->headers->header('X-Backend' => 'yes');
    $c->render(json => {
        method => $c->req->method,
        path => $c->req->url->path->to_string,
        query => $c->req->url->query->to_string,
        request_id => $h->header('X-Request-Id'),
        test => $h->header('X-Test'),
        body => $c->req->body,
    });
};
spawn('backend', sub {
    my $d = Mojo::Server::Daemon->new(app => app, silent => 1,
        listen => ["http://127.0.0.1:$backend"]);
    $d->run;
});
wait_port($backend);

# the same plain server in every configuration; $with adds what the module
# needs to serve an API elsewhere
sub config {
    my ($name, $port, $api_port, $http_extra, $metrics_only) = @_;
    my $with = defined $api_port;
    my $p = "$dir/$name";
    make_path($p);
    chmod 0755, $p;

    my $load = $with ? "load_module $MODULE;" : '';
    my $api = !$with ? '' : $metrics_only ? <<"EOF1" : <<"EOF";
    @{[ $http_extra // '' ]}
    server {
        listen 127.0.0.1:$api_port;
        location = /metrics { linegate_api metrics; }
    }
EOF1
    linegate_redis 127.0.0.1:$redis;
    linegate_operator_token ${\ ('t' x 32)};
    @{[ $http_extra // '' ]}

    server {
        listen 127.0.0.1:$api_port;
        location /_linegate/ { linegate_api operator; }
    }
EOF

    my $conf = <<"EOF";
$load
worker_processes 1;
daemon off;
master_process on;
error_log $p/error.log info;
pid $p/nginx.pid;

events { worker_connections 64; }

http {
    default_type application/octet-stream;
    client_body_temp_path $p/client_body;
    proxy_temp_path $p/proxy;
    fastcgi_temp_path $p/fastcgi;
    uwsgi_temp_path $p/uwsgi;
    scgi_temp_path $p/scgi;

    log_format plain '\$remote_addr "\$request" \$status uri=\$uri '
                     'args=\$args a=\$arg_a test=\$http_x_test '
                     'ua=\$http_user_agent id=\$request_id';
    access_log $p/access.log plain;

$api
    server {
        listen 127.0.0.1:$port;
        absolute_redirect off;

        add_header X-Id \$request_id always;
        add_header X-Uri \$uri always;
        add_header X-Args \$args always;
        add_header X-Test \$http_x_test always;

        location = /return {
            return 200 "uri=\$uri args=\$args test=\$http_x_test\\n";
        }

        location /static/ {
            root $dir/html;
        }

        location /proxy/ {
            proxy_pass http://127.0.0.1:$backend/;
            proxy_set_header X-Request-Id \$request_id;
        }

        location = /redirect {
            return 302 /return?from=redirect;
        }
    }
}
EOF

    open my $fh, '>', "$p/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;

    my $out = qx{$NGINX -t -p '$p/' -c '$p/nginx.conf' -e '$p/error.log' 2>&1};
    is($? >> 8, 0, "$name: nginx -t") or diag $out;

    spawn($name, sub {
        exec $NGINX, '-p', "$p/", '-c', "$p/nginx.conf",
             '-e', "$p/error.log";
    });
    wait_port($port);

    return $p;
}

my $ua = Mojo::UserAgent->new(max_redirects => 0, request_timeout => 10);

my @requests = (
    [GET => '/return?a=1&b=two', {'X-Test' => 'hello'}],
    [GET => '/return', {}],
    [HEAD => '/return?x', {}],
    [GET => '/static/a.txt', {}],
    [GET => '/static/a.txt', {'If-None-Match' => '"x"',
                              'Range' => 'bytes=2-7'}],
    [GET => '/static/missing.txt', {}],
    [POST => '/static/a.txt', {}, 'body'],
    [GET => '/proxy/echo?a=%20b', {'X-Test' => 'via proxy'}],
    [POST => '/proxy/post', {'Content-Type' => 'application/json'}, '{"x":1}'],
    [GET => '/redirect', {}],
    [GET => '/nowhere', {}],
);

my $ID = qr/^[0-9a-f]{32}\z/;

# status, headers without Date, body; ids checked for shape and replaced
sub answers {
    my ($port) = @_;
    my (@answers, @ids);

    for my $req (@requests) {
        my ($method, $path, $headers, $body) = @$req;
        my $tx = $ua->build_tx($method => "http://127.0.0.1:$port$path"
            => {'User-Agent' => 'noop-test', %$headers}
            => defined $body ? ($body) : ());
        $tx = $ua->start($tx);
        my $res = $tx->res;

        my %h;
        for my $name (@{ $res->headers->names }) {
            next if lc $name eq 'date';
            $h{lc $name} = $res->headers->header($name);
        }
        my $id = delete $h{'x-id'};
        push @ids, $id;

        my $b = $res->body;
        if ($path =~ m{^/proxy/}) {
            my $j = eval { decode_json($b) } // {undecoded => $b};
            my $sent = delete $j->{request_id};
            $j->{same_id} = defined $sent && defined $id && $sent eq $id;
            $b = $j;
        }

        push @answers, [$method, $path, $res->code, \%h, $b];
    }

    return (\@answers, \@ids);
}

sub access_lines {
    my ($p, $n) = @_;
    my @lines;
    for (1 .. 200) {
        open my $fh, '<', "$p/access.log" or die $!;
        @lines = <$fh>;
        last if @lines >= $n;
        sleep 0.01;
    }
    return @lines;
}

# two ids of nginx's generator (16 random bytes each) share no half
sub no_shared_half {
    my ($ids, $name) = @_;
    my %half;
    my $shared = 0;
    for my $id (@$ids) {
        $shared++ if $half{ substr $id, 0, 16 }++;
        $shared++ if $half{ substr $id, 16 }++;
    }
    is($shared, 0, "$name: no two ids share a half");
}

my $plain = config('plain', $ports[0]);
my $loaded = config('loaded', $ports[1], $ports[3]);
my $fast = config('fast', $ports[2], $ports[4],
                  'linegate_fast_request_id on;');

my $metrics = config('metrics', $ports[5], $ports[6], undef, 1);
my $metrics_fast = config('metrics_fast', $ports[12], $ports[13],
                          'linegate_fast_request_id on;', 1);

# linegate_limit (its phase handler and header filter) used on another
# server only
my $limit = config('limit', $ports[7], $ports[8], <<"EOF");
linegate_limit_zone z key=\$binary_remote_addr rate=10r/s;

    server {
        listen 127.0.0.1:$ports[9];
        location /limited { linegate_limit zone=z; return 200; }
    }
EOF

my ($a_plain, $ids_plain) = answers($ports[0]);
my ($a_loaded, $ids_loaded) = answers($ports[1]);
my ($a_fast, $ids_fast) = answers($ports[2]);
my ($a_metrics, $ids_metrics) = answers($ports[5]);
my ($a_metrics_fast, $ids_metrics_fast) = answers($ports[12]);
my ($a_limit, $ids_limit) = answers($ports[7]);

subtest 'the same answers with and without the module' => sub {
    for my $i (0 .. $#requests) {
        is_deeply($a_loaded->[$i], $a_plain->[$i],
                  "$requests[$i][0] $requests[$i][1]")
            or diag explain [$a_plain->[$i], $a_loaded->[$i]];
    }
    is_deeply($a_fast, $a_plain, 'linegate_fast_request_id on: the same');
    is_deeply($a_metrics, $a_plain, 'the metrics API alone: the same');
    is_deeply($a_metrics_fast, $a_plain,
              'the metrics API alone, linegate_fast_request_id on: the same');
    is_deeply($a_limit, $a_plain, 'linegate_limit on another server: the same');
    no_shared_half($ids_limit, 'linegate_limit elsewhere: nginx\'s ids');
    ok(!grep({ grep { /linegate|request-id/i } keys %{ $_->[3] } }
             @$a_loaded), 'no header of the module');
};

subtest '$request_id: the shape, from nginx\'s generator' => sub {
    for my $case ([plain => $ids_plain], [loaded => $ids_loaded]) {
        my ($name, $ids) = @$case;
        is(scalar(grep { defined && /$ID/ } @$ids), scalar @$ids,
           "$name: 32 lowercase hex digits");
        no_shared_half($ids, $name);
    }
};

subtest 'the same access log lines, ids aside' => sub {
    my $n = @requests;
    my @plain = access_lines($plain, $n);
    my @loaded = access_lines($loaded, $n);
    my $norm = sub {
        my @l = @_;
        s/ id=([0-9a-f]{32})$/ id=<id>/ for @l;
        return \@l;
    };
    is(scalar @loaded, $n, 'one line per request');
    is_deeply($norm->(@loaded), $norm->(@plain), 'the same lines');
    ok(!grep({ !/ id=[0-9a-f]{32}$/ } @loaded), 'ids of the same shape');
};

subtest 'the metrics API alone' => sub {
    my $tx = $ua->get("http://127.0.0.1:$ports[6]/metrics");
    is($tx->res->code, 200, 'metrics: 200');
    my $log = do { local $/; open my $fh, '<', "$metrics/error.log"; <$fh> };
    unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert logged')
        or diag $log;
    no_shared_half($ids_metrics, 'metrics alone: nginx\'s ids');
};

# the generator before: 16 fixed hex digits per worker, then splitmix64's
# finalizer (invertible) of key + counter: consecutive ids of a worker
# gave consecutive numbers back
my $M64 = Math::BigInt->new(2)->bpow(64);

sub unxorshift {
    my ($y, $s) = @_;
    my $x = $y->copy;
    $x = $y->copy->bxor($x->copy->brsft($s)) for 1 .. int(64 / $s) + 1;
    return $x;
}

sub unmix {
    my ($hex) = @_;
    my $x = Math::BigInt->from_hex($hex);
    $x = unxorshift($x, 31);
    $x->bmul(Math::BigInt->from_hex('94d049bb133111eb')->bmodinv($M64))
      ->bmod($M64);
    $x = unxorshift($x, 27);
    $x->bmul(Math::BigInt->from_hex('bf58476d1ce4e5b9')->bmodinv($M64))
      ->bmod($M64);
    return unxorshift($x, 30);
}

# the ids of either generator look alike: a worker whose $request_id is
# linegate's says so when it starts
sub error_log_of {
    my ($p) = @_;
    open my $fh, '<', "$p/error.log" or die "$p/error.log: $!";
    local $/;
    return <$fh>;
}

my $FAST_LINE = qr/linegate: \$request_id made by this worker \(linegate_fast_request_id\)/;

subtest 'linegate_fast_request_id on: linegate\'s generator' => sub {
    like(error_log_of($fast), $FAST_LINE, 'with an API: the worker says so');
    like(error_log_of($metrics_fast), $FAST_LINE,
         'the metrics API alone: the worker says so too');
    unlike(error_log_of($loaded), $FAST_LINE, 'off: nginx\'s');
    unlike(error_log_of($metrics), $FAST_LINE, 'off, metrics alone: nginx\'s');
    my $ids = $ids_metrics_fast;
    is(scalar(grep { defined && /$ID/ } @$ids), scalar @$ids,
       'metrics alone, on: 32 lowercase hex digits');
    no_shared_half($ids, 'metrics alone, on');
};

subtest 'linegate_fast_request_id on: unpredictable ids' => sub {
    my @ids = @$ids_fast;
    push @ids, map { $ua->get("http://127.0.0.1:$ports[2]/return")
                        ->res->headers->header('X-Id') } 1 .. 20;

    is(scalar(grep { defined && /$ID/ } @ids), scalar @ids,
       '32 lowercase hex digits');
    my %seen;
    is(scalar(grep { !$seen{$_}++ } @ids), scalar @ids, 'all different');
    no_shared_half(\@ids, 'one worker');

    my $steps = 0;
    for my $i (1 .. $#ids) {
        my $d = unmix(substr $ids[$i], 16)->bsub(unmix(substr $ids[$i - 1], 16))
                                          ->bmod($M64);
        $steps++ if $d == 1;
    }
    cmp_ok($steps, '<', 3, 'no counter behind an invertible mixer');
};

done_testing;
