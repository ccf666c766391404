package LG::Production;

# conf/production.conf.example, made runnable by a test: its site files
# (/etc/nginx/linegate/: Redis, secrets, the Stripe key, Clerk's keys, a
# self-signed TLS certificate) are written into a temporary directory,
# and the few lines that name this machine are replaced, each of which
# must be found exactly once:
#
#   /etc/nginx/linegate/, /var/log/nginx/   the temporary directory
#   linegate_redis 10.0.0.10:6379;          the stack's Redis
#   listen 443 ssl http2;                    127.0.0.1:<free port>
#   listen [::]:443 ...;                     dropped
#   linegate_clerk_issuer                    the stack's issuer
#   with stripe => 1: the Stripe location proxies to the stack's stub
#       (set $stripe_upstream 127.0.0.1:<port>; proxy_pass http://...)
#
#   my $p = LG::Production->new($stack, load => 'load_module /x.so;');
#   my ($rc, $out) = $p->nginx_t;
#   $p->start; $p->ua->get($p->url('/...')); $p->stop;
#
# Redis, the stub, the tokens and Clerk's keys are those of an LG::Stack;
# redis_password => '...' is the password written to redis-password (to
# serve, set it on the stack's Redis: LG::Production::require_password).
# nginx runs without -p (relative paths are the packaged nginx's, as in
# production: load_module modules/... is /usr/lib/nginx/modules/...),
# every path it writes is in the temporary directory, and it is stopped
# by pid.

use strict;
use warnings;

use Carp qw(croak);
use File::Copy qw(copy);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use Mojo::IOLoop::TLS;
use Mojo::UserAgent;
use LG::Stack;

our $EXAMPLE = "$LG::Stack::ROOT/conf/production.conf.example";

sub new {
    my ($class, $stack, %o) = @_;

    my $self = bless {
        s      => $stack,
        load   => $o{load} // croak('load: the load_module line(s)'),
        stripe => $o{stripe} // 0,
        nginx  => $o{nginx} // $ENV{LG_NGINX} // '/usr/sbin/nginx',
        conf   => $o{conf} // _slurp($EXAMPLE),
        redis_password => $o{redis_password} // 'no-password-set',
    }, $class;

    $self->{dir} = tempdir('linegate-prod-XXXXXX', TMPDIR => 1,
                           CLEANUP => !$ENV{LG_KEEP});
    chmod 0755, $self->{dir};
    ($self->{port}) = LG::Stack::_free_ports(1);
    $self->_write_site;
    $self->_write_main;

    return $self;
}

sub _write_site {
    my ($self) = @_;
    my $d = $self->{dir};
    my $s = $self->{s};

    make_path("$d/etc/tls", "$d/log", "$d/tmp");

    _spew("$d/etc/redis-password", "$self->{redis_password}\n");
    _spew("$d/etc/operator-token", $s->operator_token . "\n");
    _spew("$d/etc/webhook-secret", $s->webhook_secret . "\n");
    _spew("$d/etc/stripe-key", "sk_test_linegate\n");
    copy($s->jwks_path, "$d/etc/clerk-jwks.json") or die "jwks: $!";

    my $out = qx{openssl req -x509 -newkey rsa:2048 -nodes -days 2 \\
        -subj /CN=api.example.com -keyout '$d/etc/tls/privkey.pem' \\
        -out '$d/etc/tls/fullchain.pem' 2>&1};
    die "openssl req: $out" if $?;
}

# the example with this machine's paths and ports
sub render {
    my ($self) = @_;
    my $c = $self->{conf};
    my $d = $self->{dir};

    my $once = sub {
        my ($re, $to, $what) = @_;
        my $n = () = $c =~ /$re/g;
        die "production.conf.example: $what found $n times, not once\n"
            unless $n == 1;
        $c =~ s/$re/$to->($1)/e;
    };

    # comment lines keep their text
    my @lines = split /^/, $c;
    for (grep { !/^\s*#/ } @lines) {
        s{/etc/nginx/linegate/}{$d/etc/}g;
        s{/var/log/nginx/}{$d/log/}g;
    }
    $c = join '', @lines;

    $once->(qr/^(\s*)listen 443 ssl http2;$/m,
            sub { "$_[0]listen 127.0.0.1:$self->{port} ssl http2;" },
            'listen 443');
    $once->(qr/^(\s*)listen \[::\]:443 ssl http2;\n/m, sub { '' },
            'listen [::]:443');
    $once->(qr/^(\s*)linegate_redis \S+;$/m,
            sub { "$_[0]linegate_redis 127.0.0.1:"
                  . $self->{s}->redis_port . ';' },
            'linegate_redis');
    $once->(qr/^(\s*)linegate_clerk_issuer \S+;$/m,
            sub { "$_[0]linegate_clerk_issuer " . $self->{s}->issuer . ';' },
            'linegate_clerk_issuer');

    if ($self->{stripe}) {
        my $stub = '127.0.0.1:' . $self->{s}->stub_port;
        $once->(qr/^(\s*)set \$stripe_upstream api\.stripe\.com;$/m,
                sub { "$_[0]set \$stripe_upstream $stub;" },
                'set $stripe_upstream');
        $once->(qr{^(\s*)proxy_pass https://\$stripe_upstream;$}m,
                sub { "$_[0]proxy_pass http://\$stripe_upstream;" },
                'proxy_pass');
    }

    return $c;
}

sub _write_main {
    my ($self) = @_;
    my $d = $self->{dir};

    _spew("$d/linegate.conf", $self->render);
    _spew("$d/nginx.conf", <<"EOF");
$self->{load}
worker_processes 2;
daemon off;
master_process on;
error_log $d/log/error.log info;
pid $d/nginx.pid;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log $d/log/access.log;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    include $d/linegate.conf;
}
EOF
}

sub _cmd {
    my ($self) = @_;
    my $d = $self->{dir};
    return ($self->{nginx}, '-c', "$d/nginx.conf", '-e', "$d/log/error.log");
}

# Redis asks for a password from now on (connections already open stay
# authenticated: the stack's own nginx and client go on working)
sub require_password {
    my ($stack, $password) = @_;
    $stack->redis->config('SET', 'requirepass', $password);
    return $password;
}

sub nginx_t {
    my ($self) = @_;
    my $cmd = join ' ', map { "'$_'" } $self->_cmd;
    my $out = qx{$cmd -t 2>&1};
    return ($? >> 8, $out);
}

sub start {
    my ($self) = @_;
    my $d = $self->{dir};

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/log/stderr.log" or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        my @cmd = $self->_cmd;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;

    for (1 .. 500) {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->{port});
        if ($c) {
            $self->_wait_redis;
            return $self;
        }
        last if waitpid($pid, WNOHANG) == $pid;
        sleep 0.01;
    }

    delete $self->{pid};
    die "nginx with the production configuration did not start:\n"
        . _slurp("$d/log/stderr.log") . _slurp("$d/log/error.log");
}

# both workers connected to Redis
sub _wait_redis {
    my ($self) = @_;
    for (1 .. 300) {
        my $n = () = $self->error_log =~ /linegate: redis connected/g;
        return 1 if $n >= 2;
        sleep 0.01;
    }
    return 0;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    LG::Stack::stop_process($pid);
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    $self->stop;
}

sub pid       { $_[0]{pid} }
sub port      { $_[0]{port} }
sub dir       { $_[0]{dir} }
sub url       { "https://127.0.0.1:$_[0]{port}$_[1]" }
sub error_log { _slurp("$_[0]{dir}/log/error.log") }
sub access_log { _slurp("$_[0]{dir}/log/linegate.access.log") }

# a client that accepts the self-signed certificate
sub ua {
    my ($self) = @_;
    croak 'no TLS in Mojolicious: install libio-socket-ssl-perl (make deps)'
        unless Mojo::IOLoop::TLS->can_tls;
    return $self->{ua} //= Mojo::UserAgent->new(
        insecure => 1, connect_timeout => 10, request_timeout => 10,
        inactivity_timeout => 10);
}

# the operator API over TLS: op(PUT => '/workspaces/x', {...})
sub op {
    my ($self, $method, $path, $body) = @_;
    return $self->ua->start($self->ua->build_tx(
        $method => $self->url("/_linegate$path")
        => {Authorization => 'Bearer ' . $self->{s}->operator_token}
        => (defined $body ? (json => $body) : ())));
}

sub _spew {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh or die "$file: $!";
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return scalar <$fh>;
}

1;
