# Redis behind Sentinel (linegate_redis <sentinels> sentinel=<name>): the
# workers find the master through the sentinels, skip one that is down,
# and find the new master after a crash (SIGKILL) or a manual failover
# (+switch-master, the old master still up) without a reload; meanwhile
# clients get only complete answers: 200, or 503 with Retry-After.
use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(_exit);
use Mojo::UserAgent;
use LG::Stack;
use LG::Test;
use LG::Lines qw(body);

my $s = LG::Stack->new(redis => 'sentinel', dead_sentinel => 1)->start;
my $l = LG::Lines->new($s);

ok($s->wait_sentinels_ready(30), 'the sentinels know each other and '
   . 'both replicas');

subtest 'nginx -t' => sub {
    my $conf = $s->render;
    my $bad = sub {
        my ($directive, $err, $name) = @_;
        (my $c = $conf) =~ s/linegate_redis [^;]*;/linegate_redis $directive;/;
        my ($rc, $out) = $s->nginx_t($c);
        isnt($rc, 0, "$name: refused");
        like($out, $err, "$name: says why");
    };
    $bad->('127.0.0.1:1 127.0.0.1:2', qr/several Redis addresses need/,
           'two addresses without sentinel=');
    $bad->('unix:/tmp/s.sock sentinel=m', qr/sentinel is reached over TCP/,
           'a unix socket sentinel');
    $bad->('127.0.0.1:1 sentinel=m bogus=1', qr/invalid parameter "bogus=1"/,
           'an unknown option');
    my ($rc, $out) = $s->nginx_t($conf);
    is($rc, 0, 'the sentinel configuration passes') or diag($out);
};

my $w = $l->workspace('org_sentinel', plan => 'growth');
my $id = $l->created($w, channelType => 'phone');

subtest 'through the sentinels, the first one down' => sub {
    my $port = $s->redis_port;
    my $n = () = $s->error_log
        =~ /redis connected to the master 127\.0\.0\.1:$port/g;
    cmp_ok($n, '>=', 2, 'each worker reached the master the sentinels '
           . 'named');
    like($s->error_log, qr/redis sentinel 127\.0\.0\.1:\d+: no master/,
         'the dead sentinel was skipped');
    answer_is($l->get($w, $id), 200, 'a read');
};

# clients in child processes, until $stop exists: "status retry-after" a
# line per answer
sub load {
    my ($stop, $out, $n) = @_;
    my @pids;
    for my $c (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $ua = Mojo::UserAgent->new(request_timeout => 10);
            open my $fh, '>', "$out.$c" or _exit(1);
            my $i = 0;
            until (-e $stop) {
                my $tx = ($i++ % 2)
                    ? $ua->get($s->url("/api/line-requests/$id")
                               => $w->{auth})
                    : $ua->put($s->url('/_linegate/workspaces/org_load'
                                       . $c)
                               => {Authorization =>
                                   'Bearer ' . $s->operator_token}
                               => json => {plan => 'mini'});
                my $res = $tx->res;
                printf $fh "%s %s\n", $res->code // 'none',
                    $res->headers->header('Retry-After') // '-';
                sleep 0.005;
            }
            close $fh;
            _exit(0);
        }
        push @pids, $pid;
    }
    return @pids;
}

sub answers {
    my ($out, $n) = @_;
    my %seen;
    for my $c (1 .. $n) {
        open my $fh, '<', "$out.$c" or next;
        $seen{$_}++ for map { chomp; $_ } <$fh>;
    }
    return \%seen;
}

sub back_within {
    my ($limit) = @_;
    my $t0 = time;
    while (time - $t0 < $limit) {
        my $tx = $s->op(PUT => '/workspaces/org_back', {plan => 'mini'});
        return time - $t0 if ($tx->res->code // 0) == 200;
        sleep 0.05;
    }
    return undef;
}

sub wait_new_master {
    my ($old, $limit) = @_;
    my $until = time + $limit;
    while (time < $until) {
        my $p = $s->sentinel_master_port;
        return $p if defined $p && $p != $old;
        sleep 0.05;
    }
    return undef;
}

subtest 'the master SIGKILLed under load' => sub {
    my $old = $s->redis_port;
    my $dir = $s->dir;
    my ($stop, $out) = ("$dir/stop.kill", "$dir/answers.kill");
    my @pids = load($stop, $out, 4);
    sleep 0.5;

    $s->kill_master;
    my $new = wait_new_master($old, 30);
    ok($new, "a replica promoted (port " . ($new // '-') . ")");
    my $secs = back_within(5);
    ok(defined $secs, 'writes succeed again within 5 s of the promotion'
       . (defined $secs ? sprintf(' (%.2f s)', $secs) : ''));

    sleep 0.5;
    open my $fh, '>', $stop; close $fh;
    waitpid $_, 0 for @pids;

    my $seen = answers($out, 4);
    my @bad = grep { !/^200 -$/ && !/^503 [1-9]\d*$/ } keys %$seen;
    is_deeply(\@bad, [], 'only 200, or 503 with Retry-After')
        or diag(explain($seen));
    ok($seen->{'200 -'}, "answers served: " . join(', ',
       map { "$_ x$seen->{$_}" } sort keys %$seen));

    $s->follow_master;
    answer_is($l->get($w, $id), 200, 'the line request is still there');
};

subtest 'a manual failover: +switch-master, the old master still up' => sub {
    ok($s->wait_sentinels_ready(30, 1), 'the sentinels are ready again')
        or return;
    my $old = $s->redis_port;
    my $mark = length $s->error_log;

    my ($sp) = $s->sentinel_ports;
    my $r = Redis->new(server => "127.0.0.1:$sp", reconnect => 0);
    is($r->sentinel('failover', 'lgmaster'), 'OK', 'SENTINEL FAILOVER');
    $r->quit;

    my $new = wait_new_master($old, 30);
    ok($new, 'a new master (port ' . ($new // '-') . ')') or return;

    # every worker moves to it by itself, the old master still answering
    my ($t0, $moved) = (time, 0);
    while (time - $t0 < 5) {
        $moved = () = substr($s->error_log, $mark)
            =~ /redis connected to the master 127\.0\.0\.1:$new\b/g;
        last if $moved >= 2;
        sleep 0.05;
    }
    cmp_ok($moved, '>=', 2, sprintf('both workers reached the new master '
           . 'within 5 s (%.2f s)', time - $t0));
    like(substr($s->error_log, $mark),
         qr/\+switch-master lgmaster|not the master|READONLY/,
         'told by +switch-master, ROLE or READONLY');

    answer_is($s->op(PUT => '/workspaces/org_after', {plan => 'mini'}), 200,
              'a write after the switch');
    $s->follow_master;
    ok($s->redis->exists('lg:{ws:org_after}'), 'written to the new master');
    $s->follow_master;
    answer_is($l->get($w, $id), 200, 'the line request is still there');
};

done_testing;
