package LG::Stack;

# The linegate test stack: redis-server, the Stripe stub and nginx with the
# module, each a child process on free loopback ports, in a temporary
# directory.
#
#   my $s = LG::Stack->new(%opts)->start;
#   my $tx = $s->op(PUT => '/workspaces/org_a', {plan => 'growth'});
#
# Options (lower case) and template values (upper case, the @NAME@ of
# conf/linegate.conf.in; each one overrides the default):
#
#   stub => 0              do not start the Stripe stub
#   port, redis_port, stub_port
#                          fixed ports (default: free ones)
#   keep => 1              keep the temporary directory (also LG_KEEP=1)
#   redis => 'sentinel'    Redis behind Sentinel (also LG_REDIS=sentinel):
#                          a master on redis_port, 2 replicas, 3 sentinels
#                          monitoring it as "lgmaster"; nginx is given the
#                          sentinels. Default 'single': one redis-server.
#                          $s->redis is an LG::Redis (Redis.pm refusing a
#                          command with an undef argument).
#   redis => 'cluster'     Redis Cluster (also LG_REDIS=cluster): 3 masters
#                          and 3 replicas (redis-cli --cluster create);
#                          nginx is given the masters as seeds, cluster=on
#                          (every API is served, as on one Redis);
#                          $s->redis is an LG::RedisCluster, which sends
#                          each command to the master of its key's slot.
#                          dead_seed => 1: a port that refuses
#                          connections is the first seed.
#                          first_seed => port: a test's own seed
#                          (LG::StallProxy) comes first.
#                          cluster_interleaved => 1: slot i to master
#                          i % 3 (16384 ranges in CLUSTER SLOTS; made
#                          with CLUSTER ADDSLOTS, MEET and REPLICATE).
#                          Methods: cluster_ports, cluster_masters,
#                          cluster_replicas, cluster_master_of($key),
#                          cluster_slots_of($port), cluster_wait_ok,
#                          cluster_kill_master, cluster_start_node,
#                          cluster_reshard (a child), cluster_reshard_wait,
#                          cluster_failover; stop_redis and start_redis
#                          stop and start every node.
#   api => 0|1|'cluster'   keep the linegate_api locations of the template
#                          (1, the default on every topology), none (0),
#                          or those of the Provisioning, operator and
#                          metrics APIs alone ('cluster': a configuration
#                          without the Lines and webhook locations)
#   WORKERS, LOG_LEVEL, OPERATOR_TOKEN, WEBHOOK_SECRET,
#   WORKER_CONNECTIONS (1024), ...
#   MASTER_PROCESS => 'off' nginx in one process (development's mode):
#                          with WORKERS => 1, so that
#                          wait_redis_connected counts it
#
# Environment: LG_NGINX (nginx binary, default /usr/sbin/nginx), LG_MODULE
# (the module, default <repo>/build/ngx_http_linegate_module.so).
#
# Everything started is stopped by pid (TERM, then KILL after 3 s) in
# stop(), on destruction and at exit, even when a test dies. When a test
# file fails, the last 30 lines of nginx's error log are printed first.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use Fcntl qw(O_CREAT O_EXCL O_WRONLY);
use POSIX qw(WNOHANG);
use Scalar::Util ();
use Time::HiRes qw(sleep);
use Crypt::JWT qw(encode_jwt);
use Crypt::PK::RSA;
use Mojo::JSON qw(encode_json);
use Mojo::UserAgent;
use Redis;
use LG::Redis;
use LG::RedisCluster;

our $ROOT = abs_path(dirname(__FILE__) . '/../../..');

my %LIVE;    # stacks not stopped yet, by address
my $CRASHED = 0;    # workers that died of a signal, in stacks stopped

my @ALNUM = ('A' .. 'Z', 'a' .. 'z', '0' .. '9');

sub random_token {
    my ($n) = @_;
    return join '', map { $ALNUM[int rand @ALNUM] } 1 .. $n;
}

sub new {
    my ($class, %opts) = @_;

    my $self = bless {
        opts   => \%opts,
        stub   => $opts{stub} // 1,
        pids   => {},
        owner  => $$,
        nginx  => $ENV{LG_NGINX} // '/usr/sbin/nginx',
        module => $ENV{LG_MODULE} // "$ROOT/build/ngx_http_linegate_module.so",
    }, $class;

    return $self;
}

# N ports free now, below the kernel's ephemeral range (its first port
# from ip_local_port_range, 32768 by default; above its last when too
# little is left below). A port the kernel hands out (LocalPort 0) comes
# from that range, and may be handed out again as the local port of an
# outgoing connection (a sentinel's, a worker's, the harness's own)
# before the server it was picked for binds it: CI's nginx once failed
# "bind() ... Address already in use" so, on a Sentinel stack.
#
# A port found free is also claimed, a file of its number in a directory
# every test process shares, made with O_EXCL: two files that `prove -j`
# runs side by side once picked the same free port before either bound
# it. A claim lasts as long as the stack (stop() removes it); one whose
# process is gone is taken over. Called as a function (a test's own
# servers), the claims last until the process exits.
my $CLAIMS = ($ENV{TMPDIR} // '/tmp') . '/lg-test-ports';
my $PROCESS = bless { owner => $$ };    # the function calls' claims

sub _free_ports {
    my $self = ref $_[0] ? shift : $PROCESS;
    my ($n) = @_;
    my ($lo, $hi) = _port_range();
    my (%tried, @ports);
    make_path($CLAIMS);
    for (1 .. 2000) {
        last if @ports == $n;
        my $port = $lo + int rand($hi - $lo + 1);
        next if $tried{$port}++;
        my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                         LocalPort => $port, Proto => 'tcp',
                                         Listen => 1, ReuseAddr => 1)
            or next;
        close $sock;
        next unless _claim_port($port);
        push @{ $self->{claims} }, $port;
        push @ports, $port;
    }
    die "no free port\n" unless @ports == $n;
    return @ports;
}

sub _claim_port {
    my ($port) = @_;
    my $file = "$CLAIMS/$port";
    for (1 .. 2) {
        if (sysopen my $fh, $file, O_WRONLY | O_CREAT | O_EXCL) {
            print $fh "$$\n";
            close $fh;
            return 1;
        }
        return 0 unless $!{EEXIST};
        open my $fh, '<', $file or next;    # released meanwhile
        my $pid = <$fh> // '';
        close $fh;
        chomp $pid;
        # alive (kill 0 succeeds, or fails only for want of permission)
        return 0 if $pid =~ /^\d+$/ && (kill(0, $pid) || $!{EPERM});
        unlink $file;
    }
    return 0;
}

sub _release_ports {
    my ($self) = @_;
    unlink map { "$CLAIMS/$_" } @{ delete $self->{claims} // [] };
}

sub _port_range {
    my ($first, $last) = (32768, 60999);
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        ($first, $last) = split ' ', scalar <$fh>;
    }
    return ($first - 12000, $first - 1) if $first - 12000 >= 1024;
    return ($last + 1, 65535) if 65535 - $last >= 2000;
    return (1024, 65535);
}

sub start {
    my ($self) = @_;
    my $o = $self->{opts};

    croak "nginx binary $self->{nginx} not found" unless -x $self->{nginx};
    croak "module $self->{module} not found (make, or set LG_MODULE)"
        unless -f $self->{module};

    # a signal must still run END blocks, which stop the children
    my %signo = (HUP => 1, INT => 2, TERM => 15);
    for my $sig (keys %signo) {
        $SIG{$sig} //= sub { exit 128 + $signo{$sig} };
    }

    my $keep = $o->{keep} // $ENV{LG_KEEP};
    $self->{dir} = tempdir('linegate-XXXXXX', TMPDIR => 1,
                           CLEANUP => !$keep);
    $self->{prefix} = "$self->{dir}/nginx";
    make_path(map { "$self->{dir}/$_" } qw(nginx redis keys stub));

    # nginx workers may run as another user (nobody, www-data) when the
    # tests run as root: they need the prefix for temporary files
    chmod 0755, $self->{dir}, $self->{prefix};

    my @free = $self->_free_ports($self->topology eq 'cluster' ? 14 : 8);
    $self->{port}       = $o->{port}       || $free[0];
    $self->{redis_port} = $o->{redis_port} || $free[1];
    $self->{stub_port}  = $o->{stub_port}  || $free[2];
    if ($self->topology eq 'cluster') {
        # redis_port is the first node (a master when created)
        $self->{cluster_ports} = [$self->{redis_port}, @free[3 .. 7]];
        # the cluster bus ports: not port + 10000 (above 65535 for the
        # ports of the ephemeral range)
        @{ $self->{bus_port} }{ $self->cluster_ports } = @free[8 .. 13];
        make_path(map { "$self->{dir}/redis/$_" } $self->cluster_ports);
    }
    elsif ($self->topology eq 'sentinel') {
        $self->{replica_ports}  = [@free[3, 4]];
        $self->{sentinel_ports} = [@free[5 .. 7]];
        make_path(map { "$self->{dir}/redis/$_" }
                  @{ $self->{replica_ports} }, @{ $self->{sentinel_ports} });
    }

    $self->{operator_token} = $o->{OPERATOR_TOKEN} // random_token(32);
    $self->{webhook_secret} = $o->{WEBHOOK_SECRET}
                              // 'whsec_' . random_token(32);
    $self->{issuer} = $o->{CLERK_ISSUER} // 'https://clerk.linegate.test';

    $LIVE{"$self"} = $self;
    Scalar::Util::weaken($LIVE{"$self"});

    # the slow parts run side by side: key generation, Redis, the stub
    my $key = "$self->{dir}/keys/clerk.pem";
    my $keygen = $self->_spawn(undef, "$self->{dir}/keys/openssl.log",
        'openssl', 'genpkey', '-algorithm', 'RSA',
        '-pkeyopt', 'rsa_keygen_bits:2048', '-out', $key);
    $self->start_redis;
    $self->_start_stub if $self->{stub};

    waitpid $keygen, 0;
    die "openssl genpkey failed (exit $?)\n" if $?;
    $self->_write_jwks($key);

    my $conf = $self->render;
    open my $fh, '>', "$self->{prefix}/nginx.conf" or die "nginx.conf: $!";
    print $fh $conf;
    close $fh;

    my ($rc, $out) = $self->_nginx_test($self->{prefix});
    die "nginx -t failed:\n$out" if $rc;

    $self->_wait_port($self->{redis_port}, 'redis-server');

    $self->{log_offset} = 0;
    $self->_spawn('nginx', "$self->{prefix}/stderr.log",
        $self->{nginx}, '-p', "$self->{prefix}/",
        '-c', "$self->{prefix}/nginx.conf",
        '-e', "$self->{prefix}/error.log");

    $self->_wait_port($self->{port}, 'nginx');
    # a loaded machine (CI) may take seconds; on a cluster, every worker
    # has its slot map and each of the masters connected (before that, a
    # request is answered 503: CI's t/038 met one right after the start)
    $self->wait_redis_connected(0, 15);
    $self->_wait_cluster_workers(15) if $self->topology eq 'cluster';
    $self->_wait_stub if $self->{stub};

    return $self;
}

sub _spawn {
    my ($self, $name, $log, @cmd) = @_;

    my $pid = fork // die "fork: $!";

    if ($pid == 0) {
        # its own process group: a terminal's Ctrl-C reaches the harness,
        # which then stops the children in order
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }

    $self->{pids}{$name} = $pid if defined $name;
    return $pid;
}

sub _stop_pid {
    my ($self, $name) = @_;

    my $pid = delete $self->{pids}{$name} or return;
    stop_process($pid);
}

# a child stopped: TERM, then KILL when it is still there 3 s later; $?
# as it was (LG::Production's nginx too)
sub stop_process {
    my ($pid) = @_;

    local $?;
    kill 'TERM', $pid;
    for (1 .. 300) {
        return if waitpid($pid, WNOHANG) != 0;
        sleep 0.01;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

sub _wait_port {
    my ($self, $port, $what, $timeout) = @_;

    my $until = Time::HiRes::time() + ($timeout // 5);
    while (Time::HiRes::time() < $until) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        return 1 if $s;
        sleep 0.01;
    }

    die "$what does not answer on 127.0.0.1:$port\n" . $self->_log_tail;
}

# The stub's calls held by a fault right now (no answer yet, the caller
# still connected) whose path matches $re and whose parameters pass
# $match (optional).
sub stub_held {
    my ($self, $re, $match) = @_;
    my $log = $self->stub(GET => '/_stub/state')->res->json->{log} // [];
    return grep { $_->{fault} && !defined $_->{status} && !$_->{dropped}
                  && !$_->{client_gone}
                  && $_->{path} =~ $re && (!$match || $match->($_)) } @$log;
}

# Every worker killed at once (SIGKILL: no cleanup runs); back when the
# new ones have connected to Redis. Returns how many were killed, 0 if
# the new ones are not up within a generous limit.
sub kill_workers {
    my ($self) = @_;
    my $off = length $self->error_log;
    my $workers = $self->{opts}{WORKERS} // 2;
    my @killed = split ' ', `pgrep -P $self->{pids}{nginx}`;
    kill 'KILL', @killed;
    my $until = Time::HiRes::time() + 60;
    my $up = 0;
    while (!$up && Time::HiRes::time() < $until) {
        my @w = split ' ', `pgrep -P $self->{pids}{nginx}`;
        $up = @w == $workers
              && !grep { my $k = $_; grep { $_ == $k } @killed } @w;
        Time::HiRes::sleep(0.1) unless $up;
    }
    my $back = $up && $self->wait_redis_connected($off, 60);
    Test::More::diag('the new workers are not up and connected to Redis')
        unless $back;
    return $back ? scalar @killed : 0;
}

# The pid of a worker whose Redis connection a CLIENT PAUSE (WRITE)
# holds, or undef while none is held: staging a stall on what Redis
# shows, not on a sleep. Redis blocks the clients that sent a write (a
# script is one): CLIENT LIST's flags=b. nginx's are not the only ones:
# on a Sentinel topology each sentinel's hello (PUBLISH) is held too,
# and CLIENT LIST's order changes, so every blocked client is tried.
# Its cmd= is not looked at: the command held may be another than the
# one the test waits for (lr_create's index SET is written before it),
# and a filter on it missed the worker now and then (t/127). The
# connection's ports lead to its socket's inode (/proc/net/tcp), found
# among the workers' descriptors. $list (a scalar ref, optional)
# gets the CLIENT LIST read, for the caller's diag.
sub held_worker {
    my ($self, $list) = @_;
    my $clients = $self->redis->client('LIST') // '';
    $$list = $clients if $list;
    my @held = map { /\baddr=[\d.]+:(\d+) .*\bladdr=[\d.]+:(\d+) /
                     ? [$1, $2] : () }
               grep { /\bflags=\w*b\w* / }
               split /\n/, $clients;
    return unless @held;
    open my $fh, '<', '/proc/net/tcp' or return;
    my @tcp = <$fh>;
    close $fh;
    my %inodes;
    for my $h (@held) {
        # from that port to Redis's, and a live socket: a TIME_WAIT line
        # of the same local port (another connection's, before) has
        # inode 0
        my ($from, $redis) = map { sprintf ':%04X', $_ } @$h;
        $inodes{"socket:[$_]"} = 1
            for grep { $_ }
                map { my @f = split ' ';
                      $f[1] =~ /\Q$from\E$/ && $f[2] =~ /\Q$redis\E$/
                          ? $f[9] : () } @tcp;
    }
    return unless %inodes;
    for my $pid (split ' ', `pgrep -P $self->{pids}{nginx}`) {
        for my $fd (glob "/proc/$pid/fd/*") {
            return $pid if $inodes{ readlink($fd) // '' };
        }
    }
    return;
}

# Staging a stall on a write (Redis's writes paused first: CLIENT PAUSE
# $ms WRITE): the worker whose write is held is stopped (SIGSTOP) and
# Redis unpaused, so that the write runs and its answer waits in the
# stopped worker's socket. The held write may be another than the one
# staged for (an API key's or an account's lookup, when the worker's
# cache did not know it, is a script too): $ran->() says whether the one
# that ran was it (what it writes is there). If not, Redis is paused
# again and the worker goes on, to be held at its next write. Returns
# the pid, stopped, once $ran->() said yes; undef meanwhile (nothing
# held yet, or another write), for the caller's poll to ask again.
# $list as for held_worker.
sub stop_held_worker {
    my ($self, $ran, $ms, $list) = @_;
    my $r = $self->redis;
    my $pid = $self->held_worker($list) or return;
    kill 'STOP', $pid;
    $r->client('UNPAUSE');
    # Redis runs a held command as it unpauses: once none is held, the
    # write ran
    my $until = Time::HiRes::time() + 5;
    sleep 0.01 while ($r->client('LIST') // '') =~ /\bflags=\w*b\w* /
                     && Time::HiRes::time() < $until;
    return $pid if $ran->();
    $r->client('PAUSE', $ms, 'WRITE');
    kill 'CONT', $pid;
    return;
}

# Every worker connects to Redis on its own: wait until each has said so
# in the error log, after byte offset $from of the log. The lines are
# counted per worker (pid): on a cluster a worker logs one per master, so
# two lines may be one worker's, and each must have reached every master.
sub wait_redis_connected {
    my ($self, $from, $timeout) = @_;

    my $workers = $self->{opts}{WORKERS} // 2;
    my $per = $self->topology eq 'cluster'
              ? @{ $self->{cluster_ports} } / 2 : 1;
    my $until = Time::HiRes::time() + ($timeout // 3);

    while (Time::HiRes::time() < $until) {
        my $log = substr $self->error_log, $from // 0;
        my %by;
        $by{$1}++ while $log =~ /(\d+)#\d+: linegate: redis connected/g;
        return 1 if (grep { $_ >= $per } values %by) >= $workers;
        sleep 0.01;
    }

    return 0;
}

# every worker logged its first slot map and a connection to each of the
# cluster's masters (the 'connected' lines of wait_redis_connected are per
# node: two of them may be one worker's)
sub _wait_cluster_workers {
    my ($self, $timeout) = @_;

    my $workers = $self->{opts}{WORKERS} // 2;
    my $masters = @{ $self->{cluster_ports} } / 2;
    my $until = Time::HiRes::time() + $timeout;

    while (Time::HiRes::time() < $until) {
        my $log = $self->error_log;
        my (%maps, %nodes);
        $maps{$1}++
            while $log =~ /(\d+)#\d+: linegate: redis cluster: \d+ slot/g;
        $nodes{$1}++
            while $log =~ /(\d+)#\d+: linegate: redis connected to cluster/g;
        my $ready = grep { ($nodes{$_} // 0) >= $masters } keys %maps;
        return 1 if $ready >= $workers;
        sleep 0.02;
    }

    return 0;
}

sub _wait_stub {
    my ($self) = @_;

    my $ua = Mojo::UserAgent->new(connect_timeout => 1,
                                  request_timeout => 1);
    my $until = Time::HiRes::time() + 5;

    while (Time::HiRes::time() < $until) {
        my $ok = eval {
            $ua->get($self->stub_url('/_stub/health'))->result->is_success
        };
        return 1 if $ok;
        sleep 0.02;
    }

    die "the Stripe stub does not answer\n"
        . _slurp("$self->{dir}/stub/stub.log");
}

sub _start_stub {
    my ($self) = @_;

    $self->_spawn('stub', "$self->{dir}/stub/stub.log",
        $^X, "$ROOT/t/stub/stripe-stub.pl",
        '--listen', "127.0.0.1:$self->{stub_port}",
        '--webhook-secret', $self->{webhook_secret});
}

sub _write_jwks {
    my ($self, $pem) = @_;

    my $pk = Crypt::PK::RSA->new($pem);
    my $jwk = $pk->export_key_jwk('public', 1);

    $self->{private_key} = $pk;
    $self->{jwks} = "$self->{dir}/keys/jwks.json";

    open my $fh, '>', $self->{jwks} or die "$self->{jwks}: $!";
    print $fh encode_json({keys => [{%$jwk, kid => 'test-key-1',
                                     alg => 'RS256', use => 'sig'}]});
    close $fh;
}

# conf/linegate.conf.in with every @NAME@ filled in
sub render {
    my ($self, %over) = @_;
    my $api = delete $over{api} // $self->api;    # api => 1: keep them

    my %v = (
        MODULE             => $self->{module},
        PREFIX             => $self->{prefix},
        PORT               => $self->{port},
        REDIS              => $self->redis_directive,
        WORKERS            => 2,
        DAEMON             => 'off',
        MASTER_PROCESS     => 'on',
        LOG_LEVEL          => 'info',
        WORKER_CONNECTIONS => 1024,
        OPERATOR_TOKEN     => $self->{operator_token},
        WEBHOOK_SECRET     => $self->{webhook_secret},
        RECONCILE_INTERVAL => '2s',
        CLERK_KEY          => $self->{jwks},
        CLERK_ISSUER       => $self->{issuer},
        CLERK_AZP          => '',
        WS_RATE            => '100000r/m',
        # by-user's answers kept (client tracking): every Lines file
        # reads through the table, t/188 also without it
        LINES_CACHE        => $ENV{LG_LINES_CACHE} // 'off',
        REDIS_CONNECT_TIMEOUT => '500ms',
        REDIS_COMMAND_TIMEOUT => '500ms',
        REDIS_KEEPALIVE    => '1s',
        STRIPE_URL         => "http://127.0.0.1:$self->{stub_port}",
        STRIPE_KEY         => 'sk_test_linegate',
        STRIPE_TIMEOUT     => '3s',
        MAIN_EXTRA         => '',
        EVENTS_EXTRA       => '',
        HTTP_EXTRA         => '',
        SERVER_EXTRA       => '',
        (map { $_ => $self->{opts}{$_} } grep { /^[A-Z_]+$/ }
             keys %{ $self->{opts} }),
        %over,
    );

    # the extras may name the stack's own port (a URL of the stack itself)
    $v{$_} =~ s/\@PORT\@/$self->{port}/g
        for grep { defined $v{$_} } qw(MAIN_EXTRA HTTP_EXTRA SERVER_EXTRA);

    # comment lines keep their text (the header names "@NAME@" itself)
    my @lines = split /^/, _slurp("$ROOT/conf/linegate.conf.in");
    @lines = _without_api($api, @lines) unless $api eq '1';
    for (grep { !/^\s*#/ } @lines) {
        s{\@([A-Z_]+)\@}{
            defined $v{$1} ? $v{$1}
                           : die "no value for \@$1\@ in the template\n"
        }ge;
    }

    return join '', @lines;
}

# The template's lines without the locations that have linegate_api (and
# the comment lines just above each); with $api 'cluster', without the
# Lines and webhook ones only (what a cluster served before issue 10).
sub _without_api {
    my ($api, @in) = @_;
    my $keep = $api eq 'cluster'
             ? qr/linegate_api\s+(?:provision_|account_limits|operator|metrics)/
             : qr/(?!)/;
    my (@out, @block, $depth);
    for my $line (@in) {
        if (!@block && $line =~ /^\s*location\b/) {
            $depth = 0;
        }
        elsif (!@block) {
            push @out, $line;
            next;
        }
        push @block, $line;
        $depth += () = $line =~ /\{/g;
        $depth -= () = $line =~ /\}/g;
        next if $depth > 0;
        if (grep { (/^\s*linegate_api\b/ || /\{\s*linegate_api\b/)
                   && !/$keep/ } @block)
        {
            pop @out while @out && $out[-1] =~ /^\s*#/;
        }
        else {
            push @out, @block;
        }
        @block = ();
    }
    return @out;
}

sub api {
    my ($self) = @_;
    return $self->{opts}{api} // 1;
}

# timeout => seconds: nginx -t killed past it (exit 124), for a test of
# a configuration that could hang the master
sub _nginx_test {
    my ($self, $prefix, %opt) = @_;

    my $limit = $opt{timeout} ? "timeout -k 2 $opt{timeout} " : '';
    my $out = qx{$limit$self->{nginx} -t -p '$prefix/' -c '$prefix/nginx.conf' -e '$prefix/error.log' 2>&1};
    return ($? >> 8, $out);
}

# nginx -t on any configuration text, in a prefix of its own: the paths
# of the stack's prefix in the text are moved there.
sub nginx_t {
    my ($self, $conf, %opt) = @_;

    my $dir = tempdir('nginx-t-XXXXXX', DIR => $self->{dir}, CLEANUP => 1);
    $conf =~ s/\Q$self->{prefix}\E/$dir/g;

    # a configuration without `pid`: an nginx built from source keeps it
    # under the prefix, logs/nginx.pid, which nginx -t opens (1.31)
    mkdir "$dir/logs" or die "$dir/logs: $!";

    open my $fh, '>', "$dir/nginx.conf" or die "$dir/nginx.conf: $!";
    print $fh $conf;
    close $fh;

    return $self->_nginx_test($dir, %opt);
}

# The running stack's nginx.conf rendered again with these values (as
# render), read at the next reload (a HUP: LG::Warm's reload_held)
sub write_conf {
    my ($self, %over) = @_;
    my $conf = $self->render(%over);
    open my $fh, '>', "$self->{prefix}/nginx.conf.new"
        or die "nginx.conf.new: $!";
    print $fh $conf;
    close $fh or die "nginx.conf.new: $!";
    rename "$self->{prefix}/nginx.conf.new", "$self->{prefix}/nginx.conf"
        or die "nginx.conf: $!";
}

sub stop_redis {
    my ($self) = @_;
    delete $self->{redis};
    # a cluster: every node (their nodes.conf brings the cluster back),
    # all told at once: its six stopped one after another took over a
    # second at times, past the 1 s lease t/404 counts on
    my @names = grep { $self->{pids}{$_} }
                'redis', map { "redis_$_" } $self->cluster_ports;
    kill 'TERM', map { $self->{pids}{$_} } @names;
    $self->_stop_pid($_) for @names;
}

sub topology {
    my ($self) = @_;
    return $self->{opts}{redis} // $ENV{LG_REDIS} // 'single';
}

# what linegate_redis is given
sub redis_directive {
    my ($self) = @_;
    return $self->_cluster_directive if $self->topology eq 'cluster';
    return "127.0.0.1:$self->{redis_port}" if $self->topology ne 'sentinel';
    # dead_sentinel => 1: a sentinel that refuses connections comes first;
    # first_sentinel => port: a test's own sentinel comes first;
    # only_sentinel => port: a test's own sentinel is the only one given
    # (the stack's run all the same, for the replicas and a failover)
    return "127.0.0.1:$self->{opts}{only_sentinel} sentinel=lgmaster"
        if $self->{opts}{only_sentinel};
    my @ports = @{ $self->{sentinel_ports} };
    unshift @ports, $self->{dead_port} //= (_free_ports(1))[0]
        if $self->{opts}{dead_sentinel};
    unshift @ports, $self->{opts}{first_sentinel}
        if $self->{opts}{first_sentinel};
    return join(' ', map { "127.0.0.1:$_" } @ports) . ' sentinel=lgmaster';
}

sub sentinel_ports { @{ $_[0]{sentinel_ports} // [] } }
sub replica_ports  { @{ $_[0]{replica_ports} // [] } }

# The replicas and the sentinels, once the master runs. The sentinels
# declare a master down after 3 s (so that quiet() never looks like an
# outage to them) and fail over within seconds.
sub _start_sentinel_topology {
    my ($self) = @_;

    for my $port ($self->replica_ports) {
        $self->_spawn("redis_$port", "$self->{dir}/redis/$port/redis.log",
            'redis-server', '--save', '', '--appendonly', 'no',
            '--port', $port, '--bind', '127.0.0.1', '--daemonize', 'no',
            '--dir', "$self->{dir}/redis/$port",
            '--replicaof', '127.0.0.1', $self->{redis_port},
            '--repl-diskless-sync-delay', '0');
    }

    for my $port ($self->sentinel_ports) {
        my $conf = "$self->{dir}/redis/$port/sentinel.conf";
        open my $fh, '>', $conf or die "$conf: $!";
        print $fh <<"CONF";
port $port
bind 127.0.0.1
daemonize no
dir $self->{dir}/redis/$port
sentinel monitor lgmaster 127.0.0.1 $self->{redis_port} 2
sentinel down-after-milliseconds lgmaster 3000
sentinel failover-timeout lgmaster 10000
sentinel parallel-syncs lgmaster 2
CONF
        close $fh;
        $self->_spawn("sentinel_$port", "$self->{dir}/redis/$port/redis.log",
            'redis-server', $conf, '--sentinel');
    }

    $self->_wait_port($_, 'redis-server') for $self->replica_ports;
    $self->_wait_port($_, 'redis-sentinel') for $self->sentinel_ports;
}

# the master's port as the first sentinel that answers names it
# seconds until every worker (2) has logged reaching the master on $port
# after byte $mark of the error log (at most $limit), or undef
sub workers_on_master {
    my ($self, $port, $mark, $limit) = @_;
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() - $t0 < $limit) {
        my $n = () = substr($self->error_log, $mark)
            =~ /redis connected to the master 127\.0\.0\.1:$port\b/g;
        return Time::HiRes::time() - $t0 if $n >= 2;
        Time::HiRes::sleep(0.05);
    }
    return undef;
}

sub sentinel_master_port {
    my ($self) = @_;
    for my $port ($self->sentinel_ports) {
        my $r = eval {
            Redis->new(server => "127.0.0.1:$port", cnx_timeout => 1,
                       read_timeout => 2, reconnect => 0)
        } or next;
        my $a = eval {
            $r->sentinel('get-master-addr-by-name', 'lgmaster')
        };
        $r->quit;
        return $a->[1] if ref $a && @$a == 2;
    }
    return undef;
}

# SENTINEL FAILOVER asked of the sentinel on $port (the first one by
# default), again while it answers that a failover is in progress
# (INPROG) or sees no replica to promote yet (NOGOODSLAVE), for $secs at
# most: its last answer ('OK' once it started one).
sub sentinel_failover {
    my ($self, $secs, $port) = @_;
    $port //= ($self->sentinel_ports)[0];
    my $r = Redis->new(server => "127.0.0.1:$port", reconnect => 0);
    my ($answer, $until) = ('', Time::HiRes::time() + $secs);
    while (Time::HiRes::time() < $until) {
        $answer = eval { $r->sentinel('failover', 'lgmaster') } // $@;
        last if $answer eq 'OK' || $answer !~ /INPROG|NOGOODSLAVE/;
        sleep 0.5;
    }
    $r->quit;
    return $answer;
}

# The port of the master the sentinels name once it is not $old, within
# $secs; undef if none
sub wait_new_master {
    my ($self, $old, $secs) = @_;
    my $until = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $until) {
        my $p = $self->sentinel_master_port;
        return $p if defined $p && $p != $old;
        sleep 0.05;
    }
    return undef;
}

# Until every sentinel knows the other two and $replicas (default 2)
# replicas are in sync: a failover needs them. 1 when so within $timeout seconds.
sub wait_sentinels_ready {
    my ($self, $timeout, $replicas) = @_;
    $replicas //= 2;
    my $until = Time::HiRes::time() + ($timeout // 20);
    while (Time::HiRes::time() < $until) {
        my $ready = 0;
        for my $port ($self->sentinel_ports) {
            my $r = eval {
                Redis->new(server => "127.0.0.1:$port", cnx_timeout => 1,
                           read_timeout => 2, reconnect => 0)
            } or next;
            my $m = eval { $r->sentinel('master', 'lgmaster') };
            $r->quit;
            next unless ref $m;
            my %m = @$m;
            $ready++ if ($m{'num-other-sentinels'} // 0) == 2
                     && ($m{'num-slaves'} // 0) >= $replicas;
        }
        return 1 if $ready == 3 && $self->_replicas_in_sync($replicas);
        sleep 0.1;
    }
    return 0;
}

# SIGKILL of the master redis-server (a crash: no goodbye to clients)
sub kill_master {
    my ($self) = @_;
    my $pid = delete $self->{pids}{redis} or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;
    delete $self->{redis};
}

# every replica of the master has done its first sync and is online
sub _replicas_in_sync {
    my ($self, $n) = @_;
    my $port = $self->sentinel_master_port or return 0;
    my $m = eval {
        Redis->new(server => "127.0.0.1:$port", cnx_timeout => 1,
                   reconnect => 0)->info('replication')
    } or return 0;
    my @online = grep { /state=online/ }
                 map { $m->{$_} // '' } grep { /^slave\d+$/ } keys %$m;
    return @online >= $n;
}

# after a failover: the test's Redis client goes to the new master
sub follow_master {
    my ($self) = @_;
    my $port = $self->sentinel_master_port or return undef;
    $self->{redis_port} = $port;
    delete $self->{redis};
    return $port;
}

# Redis Cluster (redis => 'cluster'): six redis-servers, joined by
# redis-cli --cluster create into 3 masters with a replica each. A node
# declares another failed after 3 s without an answer (cluster-node-timeout
# 3000): quiet() stays shorter than that; a replica is promoted a second
# or two later.

sub cluster_ports { @{ $_[0]{cluster_ports} // [] } }

sub _cluster_directive {
    my ($self) = @_;
    # the masters the cluster was created with (the first three nodes)
    my @seeds = @{ $self->{cluster_ports} }[0 .. 2];
    unshift @seeds, $self->{dead_port} //= (_free_ports(1))[0]
        if $self->{opts}{dead_seed};
    # first_seed => port: a test's own seed comes first (LG::StallProxy)
    unshift @seeds, $self->{opts}{first_seed} if $self->{opts}{first_seed};
    return join(' ', map { "127.0.0.1:$_" } @seeds) . ' cluster=on';
}

sub _start_cluster_node {
    my ($self, $port) = @_;
    my $dir = "$self->{dir}/redis/$port";
    $self->_spawn("redis_$port", "$dir/redis.log",
        'redis-server', '--save', '', '--appendonly', 'no',
        '--port', $port, '--bind', '127.0.0.1', '--daemonize', 'no',
        '--dir', $dir,
        '--cluster-enabled', 'yes',
        '--cluster-config-file', "$dir/nodes.conf",
        # a test that must not see the cluster fail over (the down
        # master's FAIL makes every slot CLUSTERDOWN until its replica is
        # promoted) gives a longer one
        '--cluster-node-timeout',
        $self->{opts}{cluster_node_timeout} // '3000',
        '--cluster-port', $self->{bus_port}{$port},
        # replicas start their first sync at once, not 5 s later
        '--repl-diskless-sync-delay', '0');
}

# A node killed or stopped (cluster_kill_master, stop_redis) started
# again: with its nodes.conf it rejoins the cluster, a stopped master as a
# replica of the one promoted meanwhile.
sub cluster_start_node {
    my ($self, $port) = @_;
    return if $self->{pids}{"redis_$port"};
    $self->_start_cluster_node($port);
    $self->_wait_port($port, 'redis-server');
}

# A seventh node, made to meet the cluster: a master without a slot (as
# before `redis-cli --cluster reshard` gives it some). Its port; it is
# not one of cluster_ports, and is stopped with the stack or by
# cluster_remove_node.
sub cluster_add_node {
    my ($self) = @_;
    my ($port, $bus) = $self->_free_ports(2);
    $self->{bus_port}{$port} = $bus;
    make_path("$self->{dir}/redis/$port");
    $self->_start_cluster_node($port);
    $self->_wait_port($port, 'redis-server');
    my ($seed) = $self->cluster_live_ports;
    my $r = _node($port) or croak "no answer from 127.0.0.1:$port";
    $r->cluster('meet', '127.0.0.1', $seed, $self->{bus_port}{$seed});
    $r->quit;
    return $port;
}

# That node forgotten by every other node (CLUSTER FORGET: for 60 s it is
# not met again through gossip), then stopped.
sub cluster_remove_node {
    my ($self, $port) = @_;
    my $id = _cluster_myid($port);
    for my $p ($self->cluster_live_ports) {
        my $r = _node($p) or next;
        eval { $r->cluster('forget', $id) };
        $r->quit;
    }
    $self->_stop_pid("redis_$port");
}

sub _start_cluster {
    my ($self) = @_;

    my @ports = $self->cluster_ports;
    my $created = -s "$self->{dir}/redis/$ports[0]/nodes.conf";
    $self->_start_cluster_node($_) for grep { !$self->{pids}{"redis_$_"} }
                                        @ports;
    $self->_wait_port($_, 'redis-server') for @ports;

    if (!$created && $self->{opts}{cluster_interleaved}) {
        $self->_create_cluster_interleaved;
    }
    elsif (!$created) {
        my $log = "$self->{dir}/redis/cluster-create.log";
        my $pid = $self->_spawn(undef, $log, 'redis-cli', '--cluster',
            'create', (map { "127.0.0.1:$_" } @ports),
            '--cluster-replicas', '1', '--cluster-yes');
        waitpid $pid, 0;
        die "redis-cli --cluster create failed (exit $?):\n"
            . _slurp($log) if $?;
    }

    # every node agrees on the slots, and each master's replica has
    # done its first sync (a failover needs one)
    $self->cluster_wait_ok(30, replicas => 1)
        or die "the Redis Cluster is not ready within 30 s:\n"
               . join('', map { "$_: " . _cluster_info($_) . "\n" } @ports);
    delete $self->{redis};
    return $self;
}

# The cluster of cluster_interleaved: what redis-cli --cluster create
# does, by hand, with every slot a range of its own. Each node gets a
# config epoch of its own (as redis-cli gives them), the 3 masters their
# slots, every node meets the first; once all know all 6, each replica
# follows its master.
sub _create_cluster_interleaved {
    my ($self) = @_;
    my @ports = $self->cluster_ports;
    my @r = map { _node($_) or croak "no answer from 127.0.0.1:$_" } @ports;

    $r[$_]->cluster('set-config-epoch', $_ + 1) for 0 .. $#r;
    for my $m (0 .. 2) {
        $r[$m]->cluster('addslots', grep { $_ % 3 == $m } 0 .. 16383);
    }
    $r[$_]->cluster('meet', '127.0.0.1', $ports[0],
                    $self->{bus_port}{ $ports[0] }) for 1 .. $#r;

    my $until = Time::HiRes::time() + 20;
    while (grep { my @l = grep { !/handshake|noaddr/ } split /\n/,
                                 $_->cluster('nodes');
                  @l < @ports } @r)
    {
        croak 'the interleaved cluster did not meet within 20 s'
            if Time::HiRes::time() > $until;
        sleep 0.05;
    }

    my @ids = map { $_->cluster('myid') } @r[0 .. 2];
    $r[$_ + 3]->cluster('replicate', $ids[$_]) for 0 .. 2;
    $_->quit for @r;
}

# a client for one node, or undef when it does not answer
sub _node {
    my ($port) = @_;
    return eval {
        Redis->new(server => "127.0.0.1:$port", cnx_timeout => 1,
                   read_timeout => 2, reconnect => 0)
    };
}

sub _cluster_info {
    my ($port) = @_;
    my $r = _node($port) or return 'no answer';
    my $i = eval { $r->cluster('info') } // "error: $@";
    $r->quit;
    my ($state) = $i =~ /cluster_state:(\w+)/;
    return $state // $i;
}

# one node's CLUSTER SLOTS: "first-last:master" for each range, sorted
sub _slot_map {
    my ($port) = @_;
    my $r = _node($port) or return undef;
    my $s = eval { $r->cluster('slots') };
    $r->quit;
    return undef unless ref $s;
    return [map { "$_->[0]-$_->[1]:$_->[2][1]" }
            sort { $a->[0] <=> $b->[0] } @$s];
}

# What each live node says of the cluster, one line a node (its state,
# its role and master, its slot map), for a test's diagnostics when the
# cluster does not settle.
sub cluster_describe {
    my ($self) = @_;
    my @lines;
    for my $port ($self->cluster_live_ports) {
        my $r = _node($port);
        my $i = $r ? eval { $r->info('replication') } // {} : {};
        $r->quit if $r;
        my $map = _slot_map($port);
        push @lines, sprintf '%d: cluster_state %s, %s%s, slots %s', $port,
            _cluster_info($port), $i->{role} // '?',
            $i->{master_port} ? " of $i->{master_port} (link "
                                . ($i->{master_link_status} // '?') . ')'
                              : '',
            $map ? join(' ', @$map) : 'none';
    }
    return join "\n", @lines;
}

# the ports of the nodes running (not killed nor stopped)
sub cluster_live_ports {
    my ($self) = @_;
    return grep { $self->{pids}{"redis_$_"} } $self->cluster_ports;
}

# The ports of the masters serving slots now, from the CLUSTER SLOTS of a
# live node, in port order.
sub cluster_masters {
    my ($self) = @_;
    for my $port ($self->cluster_live_ports) {
        my $map = _slot_map($port) or next;
        my %m = map { /:(\d+)$/ ? ($1 => 1) : () } @$map;
        return sort { $a <=> $b } keys %m;
    }
    return ();
}

# the live nodes that are replicas
sub cluster_replicas {
    my ($self) = @_;
    my %m = map { $_ => 1 } $self->cluster_masters;
    return grep { !$m{$_} } $self->cluster_live_ports;
}

sub cluster_keyslot { return LG::RedisCluster::keyslot($_[1]) }

# the port of the master serving $key's slot now
# how many masters a pipeline of these keys writes to (one read each,
# sent at once: still one round trip); 1 off a cluster
sub masters_of {
    my ($self, @keys) = @_;
    return 1 if $self->topology ne 'cluster';
    my %m = map { ($self->cluster_master_of($_) // '') => 1 } @keys;
    return scalar keys %m;
}

# a pipeline's command names, comparable: on a cluster its commands to
# two masters run in either order, so they are compared as a set
sub pipeline_order {
    my ($self, @names) = @_;
    return $self->topology eq 'cluster' ? sort @names : @names;
}

sub cluster_master_of {
    my ($self, $key) = @_;
    my $slot = LG::RedisCluster::keyslot($key);
    for my $port ($self->cluster_live_ports) {
        my $map = _slot_map($port) or next;
        for (@$map) {
            my ($from, $to, $m) = /^(\d+)-(\d+):(\d+)$/;
            return $m if $slot >= $from && $slot <= $to;
        }
    }
    return undef;
}

# the slots a master serves now, in order
sub cluster_slots_of {
    my ($self, $port) = @_;
    for my $p ($self->cluster_live_ports) {
        my $map = _slot_map($p) or next;
        return map { my ($f, $t, $m) = /^(\d+)-(\d+):(\d+)$/;
                     $m == $port ? ($f .. $t) : () } @$map;
    }
    return ();
}

# SIGKILL of a master (a crash: no goodbye to clients nor to the cluster)
sub cluster_kill_master {
    my ($self, $port) = @_;
    my $pid = delete $self->{pids}{"redis_$port"}
        or croak "no redis-server of the cluster on $port";
    kill 'KILL', $pid;
    waitpid $pid, 0;
    delete $self->{redis};
}

# Until every live node says cluster_state:ok, all of them give the same
# slot map, every slot's master is a live node and every live node sees
# every other live one connected (no fail, pfail or handshake: a node just
# started again is known to all); replicas => 1: and each master has a
# replica online. 1 when so within $timeout seconds (20).
sub cluster_wait_ok {
    my ($self, $timeout, %opt) = @_;
    my $until = Time::HiRes::time() + ($timeout // 20);
    while (Time::HiRes::time() < $until) {
        return 1 if $self->_cluster_ok($opt{replicas});
        sleep 0.1;
    }
    return 0;
}

sub _cluster_ok {
    my ($self, $replicas) = @_;
    my @live = $self->cluster_live_ports;
    my %live = map { $_ => 1 } @live;
    my $first;
    for my $port (@live) {
        return 0 unless _cluster_info($port) eq 'ok'
                     && _sees_connected($port, \%live);
        my $map = _slot_map($port) or return 0;
        my $s = join ' ', @$map;
        $first //= $s;
        return 0 unless $s eq $first;
        my $n = 0;
        for (@$map) {
            my ($f, $t, $m) = /^(\d+)-(\d+):(\d+)$/;
            return 0 unless $live{$m};
            $n += $t - $f + 1;
        }
        return 0 unless $n == 16384;
    }
    return 0 unless defined $first;
    return 1 unless $replicas;
    my %masters = map { /:(\d+)$/ ? ($1 => 1) : () } split ' ', $first;
    for my $port (keys %masters) {
        my $r = _node($port) or return 0;
        my $i = eval { $r->info('replication') } // {};
        $r->quit;
        my @online = grep { /state=online/ }
                     map { $i->{$_} // '' } grep { /^slave\d+$/ } keys %$i;
        return 0 if @online < $replicas;
    }
    return 1;
}

# the node on $port sees each of the ports of %$live connected and well
sub _sees_connected {
    my ($port, $live) = @_;
    my $r = _node($port) or return 0;
    my $nodes = eval { $r->cluster('nodes') } // '';
    $r->quit;
    my %ok;
    for (split /\n/, $nodes) {
        my (undef, $addr, $flags, undef, undef, undef, undef, $link)
            = split ' ';
        my ($p) = ($addr // '') =~ /:(\d+)\@/ or next;
        $ok{$p} = 1 if $flags !~ /fail|handshake|noaddr/
                    && ($link // '') eq 'connected';
    }
    return !grep { !$ok{$_} } keys %$live;
}

sub _cluster_myid {
    my ($port) = @_;
    my $r = _node($port) or croak "no answer from 127.0.0.1:$port";
    my $id = $r->cluster('myid');
    $r->quit;
    return $id;
}

# Moves $slots slots (the first ones, in slot order) from the master on
# $from to the master on $to: redis-cli --cluster reshard, in a child
# process (its output in cluster_reshard_log) so that a test can send
# requests meanwhile. Returns its pid; cluster_reshard_wait waits for it.
sub cluster_reshard {
    my ($self, $from, $to, $slots) = @_;
    croak 'a reshard is running' if $self->{pids}{reshard};
    my @ids = map { _cluster_myid($_) } $from, $to;
    my $log = "$self->{dir}/redis/reshard-$from-$to-" . time . '.log';
    $self->{reshard_log} = $log;
    return $self->_spawn('reshard', $log, 'redis-cli', '--cluster',
        'reshard', "127.0.0.1:$from", '--cluster-from', $ids[0],
        '--cluster-to', $ids[1], '--cluster-slots', $slots,
        '--cluster-yes');
}

# Its exit status once it has ended, within $timeout seconds (30); undef,
# and it is stopped, when it has not.
sub cluster_reshard_wait {
    my ($self, $timeout) = @_;
    my $pid = $self->{pids}{reshard} or return undef;
    my $until = Time::HiRes::time() + ($timeout // 30);
    while (Time::HiRes::time() < $until) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pids}{reshard};
            return $? >> 8;
        }
        sleep 0.05;
    }
    $self->_stop_pid('reshard');
    return undef;
}

sub cluster_reshard_log { _slurp($_[0]{reshard_log} // '') }

# CLUSTER FAILOVER on a replica: it takes over its master's slots, the
# master (still up) becomes its replica. 1 when the replica said OK.
sub cluster_failover {
    my ($self, $replica) = @_;
    my $r = _node($replica) or croak "no answer from 127.0.0.1:$replica";
    my $ok = eval { $r->cluster('failover') };
    $r->quit;
    delete $self->{redis};
    return ($ok // '') eq 'OK';
}

sub start_redis {
    my ($self) = @_;

    return $self->_start_cluster if $self->topology eq 'cluster';

    $self->_spawn('redis', "$self->{dir}/redis/redis.log",
        'redis-server', '--save', '', '--appendonly', 'no',
        '--port', $self->{redis_port}, '--bind', '127.0.0.1',
        '--daemonize', 'no', '--dir', "$self->{dir}/redis",
        # replicas start their first sync at once, not 5 s later
        ($self->topology eq 'sentinel'
            ? ('--repl-diskless-sync-delay', '0') : ()));

    if ($self->topology eq 'sentinel' && !$self->{sentinels_started}) {
        $self->_wait_port($self->{redis_port}, 'redis-server');
        $self->_start_sentinel_topology;
        $self->{sentinels_started} = 1;
    }

    $self->_wait_port($self->{redis_port}, 'redis-server')
        if $self->{pids}{nginx};

    return $self;
}

# the names of the children that have exited on their own
sub dead {
    my ($self) = @_;
    return grep {
        waitpid($self->{pids}{$_}, WNOHANG) == $self->{pids}{$_}
            and delete $self->{pids}{$_}
    } sort keys %{ $self->{pids} };
}

# $exit_failed: called at exit with a failure status
sub stop {
    my ($self, $exit_failed) = @_;

    return if $self->{owner} != $$ || !$LIVE{"$self"};

    if ($exit_failed || _tests_failing()) {
        my $tail = $self->_log_tail;
        if ($INC{'Test/More.pm'}) { Test::More::diag($tail) }
        else                      { print STDERR $tail }
    }

    $self->_stop_pid($_) for qw(nginx stub reshard redis),
        grep { /^(?:redis|sentinel)_/ } sort keys %{ $self->{pids} };
    delete $LIVE{"$self"};
    $self->_release_ports;
    $self->_check_crashes;
}

# A worker that died of a signal other than the SIGKILL a test sends
# (kill_workers) is a crash, whatever the file's own checks saw: its
# client connections just closed, and a respawned worker's first
# requests answer 503 while it connects. The file fails at exit.
sub _check_crashes {
    my ($self) = @_;
    my @crashes = grep { !/exited on signal 9\b/ }
                  $self->error_log =~ /^(.*exited on signal \d+.*)$/mg;
    return unless @crashes;
    $CRASHED++;
    my $msg = "a worker crashed ($self->{prefix}/error.log):\n"
            . join("\n", @crashes) . "\n";
    if ($INC{'Test/More.pm'}) { Test::More::diag($msg) }
    else                      { print STDERR $msg }
}

sub _tests_failing {
    return $INC{'Test/Builder.pm'} && !Test::Builder->new->is_passing;
}

sub _log_tail {
    my ($self) = @_;
    my @lines = split /\n/, $self->error_log;
    @lines = @lines[-30 .. -1] if @lines > 30;
    return "--- last lines of $self->{prefix}/error.log ---\n"
        . join("\n", @lines) . "\n";
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    $self->stop;
}

# The exit status is saved and set again, not kept with `local $? = $?`:
# in an END block that leaves $? at 0 (perl 5.36), and a script that died
# or exited 1 (make run on a port in use, a child that stopped on its
# own) exited 0.
END {
    my $status = $?;
    $_->stop($status != 0) for grep { defined } values %LIVE;
    $PROCESS->_release_ports if $PROCESS->{owner} == $$;
    $? = $status;
    # runs before Test::More's END, which keeps a non-zero status
    $? ||= 1 if $CRASHED;
}

# accessors

sub url        { my ($s, $p) = @_; return "http://127.0.0.1:$s->{port}$p" }
sub stub_url   { my ($s, $p) = @_; return "http://127.0.0.1:$s->{stub_port}" . ($p // '') }
sub port       { $_[0]{port} }
sub redis_port { $_[0]{redis_port} }
sub stub_port  { $_[0]{stub_port} }
sub prefix     { $_[0]{prefix} }
sub dir        { $_[0]{dir} }
sub jwks_path  { $_[0]{jwks} }
sub operator_token { $_[0]{operator_token} }
sub webhook_secret { $_[0]{webhook_secret} }
sub issuer     { $_[0]{issuer} }
sub private_key { $_[0]{private_key} }

sub error_log_path { "$_[0]{prefix}/error.log" }
sub error_log  { _slurp("$_[0]{prefix}/error.log") }
sub access_log { _slurp("$_[0]{prefix}/access.log") }

sub ua {
    my ($self) = @_;
    return $self->{ua} //= Mojo::UserAgent->new(
        connect_timeout    => 10,
        inactivity_timeout => 10,
        request_timeout    => 10,
        max_redirects      => 0,
    );
}

sub redis {
    my ($self) = @_;
    return $self->{redis} //= LG::RedisCluster->new(
        ports => [$self->cluster_ports]) if $self->topology eq 'cluster';
    return $self->{redis} //= LG::Redis->new(
        server => "127.0.0.1:$self->{redis_port}",
        cnx_timeout => 2, read_timeout => 5, write_timeout => 5,
    );
}

# What Redis received from clients while $code ran: the commands, as
# MONITOR saw them (keepalive PINGs and XLENs, this helper's INFO and the commands
# scripts run inside Redis left out), and the round trips: the reads Redis
# made (INFO's total_reads_processed), one per write of a client, so
# commands written together (a pipeline) count once. Fire-and-forget
# commands, written after the answer and never waited for, are writes too:
# the caller subtracts those it expects.
#
# A worker's keepalive PING (every 2 s) written in the same write as the
# call's commands hides one round trip (the read is counted once, and the
# PING subtracted). again => 1, for a $code that may run twice: while the
# window saw a PING, $code runs again (at most 5 times). The third value
# returned is the PINGs the last window saw, the fourth the commands
# scripts ran meanwhile (MONITOR's "[0 lua]" lines: what a script walked).
sub redis_traffic {
    my ($self, $code, %opt) = @_;
    my @r;
    for (1 .. ($opt{again} ? 5 : 1)) {
        @r = $self->quiet(sub { $self->_redis_traffic($code) });
        last unless $r[2];
    }
    return @r;
}

# Runs $code with the sentinels and replicas stopped (SIGSTOP, then
# SIGCONT; the master in use, which a failover may have made of a
# replica, keeps running), so that what the master counts meanwhile
# (MONITOR, INFO commandstats, total_reads_processed) is linegate's
# alone: the sentinels' PINGs, INFOs and hellos and the replicas'
# acknowledgements are held back. On a cluster, the replicas are stopped
# (their acknowledgements are reads of the masters); the cluster bus is
# not counted. On a single Redis, just $code. Keep $code short: a
# sentinel stopped for seconds would see the time jump, a cluster node
# after 3 s would fail over.
sub quiet {
    my ($self, $code) = @_;
    # after a Sentinel failover the master is one of the first replicas
    # (redis_<port>) and the first master (redis) a replica: the one in
    # use keeps running, or $code would count nothing
    my $master = $self->topology eq 'sentinel'
        ? ($self->sentinel_master_port // $self->{redis_port}) : 0;
    my $first = $self->{redis_port} // 0;
    my @pids = $self->topology eq 'cluster'
        ? map { $self->{pids}{"redis_$_"} } $self->cluster_replicas
        : map { $self->{pids}{$_} }
          grep { /^(?:redis|sentinel)_/ && $_ ne "redis_$master"
                 || $_ eq 'redis' && $master && $master != $first }
          keys %{ $self->{pids} };
    return $code->() unless @pids;
    kill 'STOP', @pids;
    my @r = eval { $code->() };
    my $err = $@;
    kill 'CONT', @pids;
    die $err if $err;
    return wantarray ? @r : $r[0];
}

# On a cluster: MONITOR on every master, the reads summed over them.
sub _redis_traffic {
    my ($self, $code) = @_;

    my @ports = $self->topology eq 'cluster' ? $self->cluster_masters
                                             : ($self->{redis_port});
    my @mon = map {
        my $m = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $_)
            or croak "monitor: $!";
        print $m "MONITOR\r\n";
        sysread($m, my $ok, 5);             # "+OK\r\n", no more
        $m;
    } @ports;

    # (on a cluster, the client's INFO goes to every master: summed)
    my $reads = sub { $self->redis->info('stats')->{total_reads_processed} };
    my $before = $reads->();
    $code->();
    sleep 0.2;
    my $after = $reads->();

    # each master's feed up to a marker sent after the second INFO (read
    # until it arrives: nothing in flight is missed), then only what ran
    # between the two INFOs: a PING or a background command just before
    # the first or after the second is in neither count
    my $mark = "lg-traffic-end-$$-" . int(rand(1e9));
    for my $port (@ports) {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port)
            or croak "marker: $!";
        print $c "ECHO $mark\r\n";
        my $ok = <$c>;
        close $c;
    }
    my @lines;
    for my $m (@mon) {
        my $sel = IO::Select->new($m);
        my $buf = '';
        while (index($buf, $mark) < 0 && $sel->can_read(5)) {
            last unless sysread($m, $buf, 65536, length $buf);
        }
        close $m;
        $buf = substr($buf, 0, index($buf, $mark)) if index($buf, $mark) >= 0;
        my @feed = $buf =~ /([^\n]*\n)/g;
        my @info = grep { $feed[$_] =~ /"info"/i } 0 .. $#feed;
        @feed = @feed[$info[0] + 1 .. $info[-1] - 1] if @info >= 2;
        push @lines, @feed;
    }

    # on a cluster, the masters' lines in the order they ran (one clock:
    # MONITOR's time stamps, same box)
    @lines = map { $_->[1] }
             sort { $a->[0] <=> $b->[0] }
             map { [/^\+?(\d+\.\d+)/ ? $1 : 0, $_] } @lines
        if @mon > 1;

    my @top = grep { !/\[\d+ lua\]/ } @lines;
    my $pings = grep { /"ping"/i } @top;

    # the second INFO's own read is counted in $after (once per master);
    # the keepalive's XLEN of the reconciliation stream (the metrics'
    # backlog) is written with its PING
    return ([grep { !/"(?:ping|info)"/i && !/"xlen" "lg:\{fleet\}:reconcile"/i } @top],
            $after - $before - @ports - $pings, $pings,
            [grep { /\[\d+ lua\]/ } @lines]);
}

# Build and run a request. $body: a reference to a string (sent as is),
# any other reference (sent as JSON) or undef (no body).
sub _request {
    my ($self, $method, $url, $headers, $body) = @_;

    my @content = !defined $body      ? ()
                : ref $body eq 'SCALAR' ? ($$body)
                : (json => $body);

    my $tx = $self->ua->build_tx($method => $url => $headers => @content);
    return $self->ua->start($tx);
}

# the operator API, with the token: op(PUT => '/workspaces/x', {...})
sub op {
    my ($self, $method, $path, $body, %headers) = @_;

    $path = "/_linegate$path" unless $path =~ m{^/_linegate/};

    return $self->_request($method, $self->url($path),
        {Authorization => "Bearer $self->{operator_token}", %headers},
        $body);
}

# the stub's control API: stub(POST => '/_stub/customers', {...})
sub stub {
    my ($self, $method, $path, $body) = @_;

    croak 'the Stripe stub is not started' unless $self->{pids}{stub};

    return $self->_request($method, $self->stub_url($path), {}, $body);
}

# A Clerk session token signed with the stack's key. Claims override the
# defaults; an undef value removes a claim. -header adds header fields,
# -key signs with another key (a Crypt::PK::RSA or a PEM reference).
sub clerk_token {
    my ($self, %c) = @_;

    my $header = delete $c{-header} // {};
    my $key    = delete $c{-key} // $self->{private_key};
    my $alg    = delete $c{-alg} // 'RS256';
    my $now    = time;

    my %claims = (
        iss => $self->{issuer},
        sub => 'user_test',
        exp => $now + 300,
        iat => $now,
        nbf => $now - 5,
        sid => 'sess_test',
        v   => 2,
        o   => {id => 'org_test', rol => 'admin', slg => 'test'},
    );

    while (my ($k, $v) = each %c) {
        if (defined $v) { $claims{$k} = $v }
        else            { delete $claims{$k} }
    }

    return encode_jwt(payload => \%claims, key => $key, alg => $alg,
                      extra_headers => {kid => 'test-key-1', %$header});
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return scalar <$fh>;
}

1;
