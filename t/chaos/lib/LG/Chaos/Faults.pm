package LG::Chaos::Faults;

# The fault injector: a forked process that, until its deadline, injects
# one fault every 1.5 to 4 s (the gap: `gap => [min, max]`) and writes one
# JSON line per fault to its log: {t, kind, detail, t_end}. The kinds are
# taken in turn, each round in a new order drawn from the run's seed, so
# that every enabled kind runs once before any runs twice: a run of 40 s
# with a gap of at most 2.5 s (t/900-chaos-short.t) injects every kind.
# A fault that could not be injected has "failed" in its detail.
#
# Kinds (CHAOS_FAULTS selects among them):
#
#   stripe_5xx stripe_429 stripe_timeout stripe_drop stripe_after_commit
#   stripe_oversize stripe_cut       queued at the stub (/_stub/faults)
#                                    for one Stripe path, 1-3 calls
#   redis_pause     CLIENT PAUSE 700-1500 ms (past the command timeout)
#   redis_kill      CLIENT KILL TYPE normal (every nginx connection)
#   redis_busy      a read-only Lua loop busy for 1-2 s (Redis 7 refuses
#                   DEBUG SLEEP); it ends by itself, well below
#                   busy-reply-threshold (5 s), and SCRIPT KILL stops it
#                   if it does not
#   nginx_reload    SIGHUP to the master (nginx -s reload)
#   reload_redis_drop  SIGHUP, then CLIENT KILL 100-300 ms later (the old
#                   workers are finishing their requests)
#   worker_kill     SIGKILL of one worker (the master starts another)
#   client_abort    not injected here: clients close their socket right
#                   after sending (LG::Chaos::Client op_abort)

use strict;
use warnings;

use Mojo::JSON qw(encode_json);
use Mojo::UserAgent;
use Redis;
use Time::HiRes qw(sleep time);

our @KINDS = qw(stripe_5xx stripe_429 stripe_timeout stripe_drop
    stripe_after_commit stripe_oversize stripe_cut redis_pause redis_kill
    redis_busy nginx_reload reload_redis_drop worker_kill client_abort);

# Stripe paths a fault is queued for: the calls of create, payment_link,
# cancel, poll and confirm
my @STRIPE_PATHS = (
    [POST => '/v1/invoices'], [POST => '/v1/invoiceitems'],
    [POST => '/v1/invoices/'], [GET => '/v1/invoices/'],
    [POST => '/v1/subscriptions'], [POST => '/v1/subscriptions'],
    [GET => '/v1/customers/'],
);

# $c: {seed, until, stub_url, redis_port, nginx_pid_file, log, kinds,
#      stripe_timeout_ms, gap => [min, max] (seconds; [1.5, 4])}
sub new {
    my ($class, %c) = @_;
    return bless {gap => [1.5, 4], %c}, $class;
}

# the kinds in an order drawn with rand (so from the seed): Fisher-Yates
# written out, since List::Util's shuffle need not use rand's sequence
sub shuffled {
    my @k = @_;
    for (my $i = $#k; $i > 0; $i--) {
        my $j = int rand($i + 1);
        @k[$i, $j] = @k[$j, $i];
    }
    return @k;
}

sub redis {
    my ($self) = @_;
    return Redis->new(server => "127.0.0.1:$self->{redis_port}",
                      cnx_timeout => 2, read_timeout => 10,
                      write_timeout => 5);
}

sub run {
    my ($self) = @_;
    srand($self->{seed});
    open my $fh, '>', $self->{log} or die "$self->{log}: $!";
    $fh->autoflush(1);
    my $ua = Mojo::UserAgent->new(request_timeout => 10);
    $self->{ua} = $ua;

    my @kinds = grep { $_ ne 'client_abort' } @{ $self->{kinds} };
    return unless @kinds;

    my ($min, $max) = @{ $self->{gap} };
    my @round;
    sleep 1.5;
    while (time < $self->{until} - 1) {
        @round = shuffled(@kinds) unless @round;
        my $kind = shift @round;
        my $t = time;
        my $detail = eval { my $m = "f_$kind"; $self->$m } // "failed: $@";
        print $fh encode_json({t => $t, t_end => time, kind => $kind,
                               detail => $detail}), "\n";
        sleep $min + rand($max - $min);
    }
    close $fh;
}

sub stub_fault {
    my ($self, %f) = @_;
    my ($method, $path) = @{ $STRIPE_PATHS[int rand @STRIPE_PATHS] };
    my $count = 1 + int rand 3;
    my $tx = $self->{ua}->post("$self->{stub_url}/_stub/faults" => json => {
        method => $method, path_prefix => $path, count => $count, %f});
    die 'stub refused the fault: ' . ($tx->res->body // '') . "\n"
        unless $tx->res->is_success;
    return "$method $path x$count " . encode_json(\%f);
}

sub f_stripe_5xx { $_[0]->stub_fault(status => (500, 502, 503)[rand 3]) }
sub f_stripe_429 { $_[0]->stub_fault(status => 429, retry_after => 1) }
sub f_stripe_drop { $_[0]->stub_fault(drop => 1) }

sub f_stripe_timeout {
    my ($self) = @_;
    return $self->stub_fault(
        latency_ms => $self->{stripe_timeout_ms} + 300 + int rand 700);
}

sub f_stripe_after_commit {
    my ($self) = @_;
    return $self->stub_fault(after_commit => 1,
        rand() < 0.5 ? (status => 500) : (drop => 1));
}

sub f_stripe_oversize {
    my ($self) = @_;
    return $self->stub_fault(oversize => 70_000 + int rand 60_000,
                             after_commit => 1);
}

sub f_stripe_cut {
    my ($self) = @_;
    return $self->stub_fault(cut => 1, after_commit => 1);
}

sub f_redis_pause {
    my ($self) = @_;
    my $ms = 700 + int rand 800;
    $self->redis->client_pause($ms);
    sleep $ms / 1000;
    return "CLIENT PAUSE $ms";
}

sub kill_clients {
    my ($self) = @_;
    my $n = $self->redis->client_kill('TYPE', 'normal', 'SKIPME', 'yes');
    return "CLIENT KILL TYPE normal: $n";
}

sub f_redis_kill { $_[0]->kill_clients }

sub f_redis_busy {
    my ($self) = @_;
    my $ms = 1000 + int rand 1000;
    my $r = $self->redis;
    my $t0 = time;
    eval {
        $r->eval(<<'LUA', 0, $ms);
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
local n = 0
repeat
  n = n + 1
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) * 1000
return n
LUA
        1;
    } or do {
        my $e = $@;
        eval { $self->redis->script_kill };
        return "busy script $ms ms failed: $e";
    };
    return sprintf 'busy script %d ms (ran %.2f s)', $ms, time - $t0;
}

sub master_pid {
    my ($self) = @_;
    open my $fh, '<', $self->{nginx_pid_file} or die "no nginx pid\n";
    my $pid = <$fh>;
    chomp $pid;
    return $pid;
}

sub f_nginx_reload {
    my ($self) = @_;
    my $pid = $self->master_pid;
    kill 'HUP', $pid or die "HUP $pid: $!\n";
    return "SIGHUP $pid";
}

sub f_reload_redis_drop {
    my ($self) = @_;
    my $d = $self->f_nginx_reload;
    sleep 0.1 + rand 0.2;
    return "$d; " . $self->kill_clients;
}

# the nginx workers: children of the master named "worker process"
sub workers {
    my ($self) = @_;
    my $master = $self->master_pid;
    my @w;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        my ($pid, $ppid) = $line =~ /^(\d+) \(.*\) \S+ (\d+)/ or next;
        next unless $ppid == $master;
        open my $cf, '<', "/proc/$pid/cmdline" or next;
        my $cmd = <$cf> // '';
        push @w, $pid if $cmd =~ /worker process/ && $cmd !~ /shutting/;
    }
    return @w;
}

sub f_worker_kill {
    my ($self) = @_;
    my @w = $self->workers or die "no worker found\n";
    my $pid = $w[int rand @w];
    kill 'KILL', $pid or die "KILL $pid: $!\n";
    return "SIGKILL worker $pid";
}

1;
