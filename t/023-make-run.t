# make run (t/lib/run-dev.pl) as a new user meets it: the curl examples
# it prints answer what their comments say, run exactly as printed (the
# placeholders filled from the answers before them), on one Redis, on
# Sentinel and on a Redis Cluster, with the same demo credentials; Ctrl-C
# stops everything it started; a second run on the same ports starts
# again; a run whose port is taken fails (it once exited 0: LG::Stack's
# END block lost the exit status).
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use File::Temp ();
use Mojo::JSON qw(decode_json);
use LG::Stack;

my $ports = LG::Stack->new;
my ($port, $redis_port, $stub_port) = $ports->_free_ports(3);
my %env = (LG_PORT => $port, LG_REDIS_PORT => $redis_port,
           LG_STUB_PORT => $stub_port);
my $dir = File::Temp::tempdir('run-dev-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# a script of the harness that dies or exits non-zero says so
system(qq{$^X -It/lib -MLG::Stack -e 'die "x\\n"' 2>/dev/null});
isnt($? >> 8, 0, 'LG::Stack loaded, a script that dies fails');
for (['exit 3', 3], ['exit 0', 0]) {
    system($^X, '-It/lib', '-MLG::Stack', '-e', $_->[0]);
    is($? >> 8, $_->[1], "LG::Stack loaded, $_->[0]: exit $_->[1]");
}

# run-dev.pl in its own process group, as make run in a terminal;
# returns its pid once it printed everything (or ended)
my (%running, %exit);
sub start_run {
    my ($topology, $log) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        setpgrp(0, 0);
        @ENV{keys %env} = values %env;
        $ENV{LG_REDIS} = $topology;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec $^X, 't/lib/run-dev.pl'; }
        POSIX::_exit(127);
    }
    $running{$pid} = 1;
    my $last = $topology eq 'cluster' ? qr/keys 'lg:rl:\*'\n/
                                      : qr/reconciliation\/resolved.*\n\n/;
    for (1 .. 1200) {
        last if slurp($log) =~ $last;
        if (waitpid($pid, WNOHANG) == $pid) {
            $exit{$pid} = $? >> 8;
            delete $running{$pid};
            last;
        }
        sleep 0.1;
    }
    return $pid;
}

sub slurp {
    open my $fh, '<', $_[0] or return '';
    local $/;
    return <$fh>;
}

# the pids under $pid (nginx's workers too)
sub descendants {
    my @kids = split ' ', `pgrep -P $_[0]`;
    return map { ($_, descendants($_)) } @kids;
}

# Ctrl-C: SIGINT to the process group; its exit status, and what of its
# processes is still alive
sub interrupt {
    my ($pid) = @_;
    my @under = descendants($pid);
    kill 'INT', -$pid;
    my $rc;
    for (1 .. 300) {
        if (waitpid($pid, WNOHANG) == $pid) { $rc = $? >> 8; last }
        sleep 0.1;
    }
    unless (defined $rc) { kill 'KILL', -$pid; waitpid $pid, 0 }
    delete $running{$pid};
    sleep 0.2;
    return ($rc, grep { kill 0, $_ } @under);
}

# What each printed command must answer: HTTP status (curl -s lines, -w
# added) and a check of the body
my ($email, $preview);
my @expect = (
    [qr/"channelType":"phone"/, 201, sub {
        $_[0]{status} eq 'provisioning'
            && $_[0]{paymentStatus} eq 'not_required' }],
    [qr/grace\@example\.com/, 201, sub {
        $email = $_[0];
        $_[0]{status} eq 'awaiting_payment'
            && $_[0]{invoiceId} =~ /^in_/ && $_[0]{paymentUrl} }],
    [qr/_stub\/invoices\/\$INV\/pay/, 200, sub {
        $_[0]{delivered} && $_[0]{status} == 200 }],
    [qr/line-requests\/\$ID -H/, 200, sub {
        $_[0]{status} eq 'provisioning' && $_[0]{paymentStatus} eq 'paid' }],
    [qr/lines\/\$ID\/active/, 200, sub {
        $_[0]{provisioningStatus} eq 'active' }],
    [qr/lines\/by-user/, 200, sub {
        my @l = @{ $_[0]{lines} };
        @l == 2 && (grep { $_->{isActive} } @l) == 1 }],
    [qr/_linegate\/provisioning /, 200, sub {
        @{ $_[0]{entries} } == 2 }],
    [qr/provision-preview/, 200, sub {
        $preview = $_[0];
        $_[0]{status} eq 'OK' && $_[0]{preview_token} =~ /^lpv_/ }],
    [qr/provision-confirm/, 200, sub {
        $_[0]{status} eq 'OK' && $_[0]{phone_number} =~ /^\+1415555010\d$/
            && $_[0]{subscription_id} =~ /^sub_/ }],
    [qr/accounts\/limits/, 200, sub {
        $_[0]{limits}{daily}{used} == 1
            && $_[0]{limits}{monthly}{remaining} == 9 }],
    [qr/reconciliation(?:\/run|\/resolved)? /, 200, sub {
        ref $_[0]{entries} eq 'ARRAY' }],
    # LG_REDIS=cluster, besides
    [qr/cluster keyslot/, undef, sub { $_[0] =~ /^\d+$/ }],
    [qr/^for i in/, undef, sub { $_[0] =~ /^200 .*429 *$/ }],
    [qr/^curl -si .*limited/, undef, sub {
        $_[0] =~ /^Retry-After: \d+/mi && $_[0] =~ /^RateLimit: /mi }],
    [qr/--cluster call/, undef, sub { $_[0] =~ /lg:rl:\{demo:/ }],
);

# runs the commands printed after "Try, in another shell:", in order
sub try_examples {
    my ($out, $name) = @_;
    my ($block) = $out =~ /^Try, in another shell:\n(.*)/ms
        or return fail("$name: no examples printed");
    $block =~ s/\\\n//g;
    local %ENV = %ENV;
    ($email, $preview) = ();
    my $n = 0;
    for my $cmd (grep { /\S/ && !/^#/ && !/^On the cluster/ }
                 split /\n/, $block) {
        if ($cmd =~ /^export /) {
            $cmd = sprintf 'export ID=%s INV=%s', $email->{line}{_id},
                           $email->{invoiceId}
                if $cmd =~ /<line\._id>/ && $email;
            $ENV{$1} = $2 while $cmd =~ /(\w+)=(\S+)/g;
            next;
        }
        $cmd =~ s/<lpv_\.\.\.>/$preview->{preview_token}/ if $preview;
        my ($e) = grep { $cmd =~ $_->[0] } @expect;
        unless ($e) { fail("$name: no check for: $cmd"); next }
        $n++;
        my $run = defined $e->[1] ? "$cmd -w '\\n%{http_code}'" : $cmd;
        open my $fh, '-|', 'bash', '-c', "$run 2>&1" or die "bash: $!";
        my $answer = do { local $/; <$fh> } // '';
        close $fh;
        $answer =~ s/\e\[[\d;]*m//g;
        my $got = $answer;
        if (defined $e->[1]) {
            my ($body, $code) = $answer =~ /\A(.*)\n(\d{3})\z/s;
            my $json = eval { decode_json($body // '') };
            ok(defined $code && $code == $e->[1] && ref $json
               && $e->[2]->($json), "$name: $cmd")
                or diag("answer: $answer");
        }
        else {
            ok($e->[2]->($got), "$name: $cmd") or diag("answer: $answer");
        }
    }
    return $n;
}

my (%seen, $twice);
my $i = 0;
for my $topology ('', '', 'sentinel', 'cluster') {
    my $name = $topology || 'one Redis';
    my $log = "$dir/run-" . $i++ . '.log';    # one each: no stale lines
    my $pid = start_run($topology, $log);
    my $out = slurp($log);
    ok($running{$pid}, "$name: make run starts") or diag($out);
    next unless $running{$pid};

    like($out, qr{^  linegate        http://127\.0\.0\.1:$port$}m,
         "$name: on LG_PORT");
    my ($creds) = $out =~ /^(  operator token.*?)^  Stripe stub/ms;
    $creds =~ s/(tuco|key|sbk|sbs)_\w+/$1_X/g;
    $seen{$creds}++;

    my $n = try_examples($out, $name);
    cmp_ok($n, '>=', $topology eq 'cluster' ? 17 : 11,
           "$name: every example ran");

    if (!$topology && !$twice++) {
        my $again = "$dir/again.log";
        my $other = start_run('', $again);
        ok(!$running{$other}, 'a second make run on the same port ends');
        like(slurp($again), qr/port $port is in use/, 'saying why');
        isnt($exit{$other} // 0, 0, 'and fails');
    }

    my ($logs) = $out =~ m{^  logs            (\S+)/nginx/error\.log}m;
    my ($rc, @left) = interrupt($pid);
    is($rc, 0, "$name: Ctrl-C: exit 0");
    like(slurp($log), qr/^stopping$/m, "$name: stopping printed");
    is("@left", '', "$name: nothing left running");
    ok(!-e $logs, "$name: its temporary directory removed");
}
is(scalar keys %seen, 1, 'the same demo data on every topology')
    or diag(join "\n", keys %seen);

END { kill 'KILL', -$_ for keys %running }

$ports->_release_ports;
done_testing;
